"""Helper atkF's attacks on the last session's fixes: a legacy balance row without cash, the
embedded start on folders that are not a new one, and a migration that loses a deadlock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from strategy_engine import engine
from strategy_engine.core.errors import DatabaseUnavailable, InputError
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.store import Session, connect, migrations
from strategy_engine.store.migrations import applied_versions, migrate
from tests.conftest import seed
from tests.test_exactly_once import T, entry_setup
from tests.test_manual_trade import trade


@pytest.mark.parametrize(("power", "equity"), [(500.0, 600.0), (None, None)])
def test_a_balance_row_without_cash_trades_nothing_and_keeps_its_figures(
    session: Session, power: float | None, equity: float | None
) -> None:
    """Cash NULL (a legacy table's nullable column) is unknown, not $0. Before: the account read
    as Account(0, 0, 0), a manual buy was refused with "limit 0.00" while status showed buying
    power 500, and the tick wrote cash, buying power and equity 0 over the row."""
    s = session
    seed(s, cash=1000.0, config={"symbols": ["SPY"], "order_qty": 5})
    entry_setup(s, ("SPY",), T)
    for column in ("cash", "buying_power", "equity"):  # nullable, as a legacy table has them
        s.execute(f"alter table broker_balances alter column {column} drop not null")
    s.execute("update broker_balances set cash = null, buying_power = %s, equity = %s", (power, equity))
    account_id = s.fetchone("select account_id from broker_balances")
    assert account_id is not None
    with pytest.raises(InputError) as err:
        trade(s, "buy", 3)
    assert str(err.value) == (
        "account sim: its broker_balances row has no cash (a table from an older shape); set it"
        f" (update public.broker_balances set cash = <dollars> where account_id = '{account_id[0]}')"
        " before it trades"
    )
    result = engine.tick(s, T)
    assert [(r.strategy, r.outcome, r.orders) for r in result.strategies] == [
        ("nft", StrategyOutcome.FAILED, 0)
    ]
    assert s.fetchall("select cash, buying_power::float8, equity::float8 from broker_balances") == [
        (None, power, equity)
    ]
    assert s.fetchall("select * from paper_trades") == []
    assert s.fetchall("select * from broker_positions") == []
    # The operator's own fix is all it takes.
    s.execute("update broker_balances set cash = 1000")
    assert trade(s, "buy", 3).filled_qty == 3


def test_a_migration_that_loses_a_deadlock_is_an_outage_and_nothing_of_it_stays(
    empty_db_url: str, tmp_path: Path
) -> None:
    """A tick (here: another session) holds one table and wants one a migration holds: PostgreSQL
    ends the migration's transaction (40P01), well before its lock timeout. Nothing is wrong with
    the file: exit 3, run it again. Before (helper atkF): exit 2, "failed", as for a broken file."""
    body = "lock table public.t1 in access exclusive mode;\nlock table public.t2 in access exclusive mode;\n"
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000001_locks.sql").write_text(body, encoding="utf-8")
    with connect(empty_db_url) as setup:
        setup.execute("create table public.t1 (x int); create table public.t2 (x int)")
    other = psycopg.connect(empty_db_url)
    try:
        other.execute("set deadlock_timeout = '60s'")  # the migration's backend detects the deadlock
        other.execute("lock table public.t2 in access exclusive mode")
        failure: list[BaseException] = []

        def run() -> None:
            with connect(empty_db_url) as s:
                try:
                    migrate(s, folder)
                except BaseException as exc:
                    failure.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        waiting = "select count(*) from pg_locks l join pg_class c on c.oid = l.relation where c.relname = 't2' and not l.granted"
        with connect(empty_db_url) as watch:
            while watch.fetchone(waiting) != (1,) and worker.is_alive():
                time.sleep(0.05)
        other.execute("lock table public.t1 in access exclusive mode")  # waits until the migration gives up
        other.rollback()
        worker.join()
    finally:
        other.close()
    assert len(failure) == 1 and isinstance(failure[0], DatabaseUnavailable)
    assert str(failure[0]).startswith(
        "migration 20990101000001_locks.sql stopped: another session's locks and its own deadlocked,"
        " nothing of it applied; run it again ("
    )
    with connect(empty_db_url) as s:
        assert applied_versions(s) == set()
        assert migrate(s, folder) == ["20990101000001"]


@pytest.mark.parametrize(
    ("error", "clash"),
    [
        (psycopg.errors.DeadlockDetected("deadlock detected"), "deadlocked"),
        (psycopg.errors.SerializationFailure("could not serialize access"), "conflicted"),
    ],
)
def test_a_class_40_failure_is_an_outage_named_for_what_happened(error: psycopg.Error, clash: str) -> None:
    mig = migrations.Migration("20990101000001", "locks", Path("20990101000001_locks.sql"))
    out = migrations.refusal(mig, error)
    assert isinstance(out, DatabaseUnavailable)
    assert str(out) == (
        f"migration 20990101000001_locks.sql stopped: another session's locks and its own {clash},"
        f" nothing of it applied; run it again ({error})"
    )
