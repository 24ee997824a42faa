"""One strategy's failure never stops the others; a run left `running` by a dead process is closed."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from strategy_engine import engine
from strategy_engine.backtest import synthetic
from strategy_engine.brokers.base import Broker
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core.models import Account, Position, StrategyOutcome
from strategy_engine.store import Session, connect
from strategy_engine.store.driver_errors import unavailable
from tests.conftest import DAY, REPO, load_market, seed

SYMS = ("IWM", "QQQ", "SPY")
BUGGY_CASH = 1234.0


def _buggy(acct: Account, pos: list[Position], minute: datetime, slip: float) -> Broker:
    if acct.cash == BUGGY_CASH:
        raise ZeroDivisionError("a bug in one strategy's minute")
    return SimulatedBroker(acct.cash, pos, slip, now=minute)


def _outage(acct: Account, pos: list[Position], minute: datetime, slip: float) -> Broker:
    if acct.cash == BUGGY_CASH:  # the driver's words, as store/driver_errors.py keeps them
        raise unavailable(psycopg.OperationalError("server closed the connection unexpectedly"))
    return SimulatedBroker(acct.cash, pos, slip, now=minute)


def test_a_strategy_failed_by_an_outage_logs_the_drivers_words_for_operators(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """`detail` (scrubbed, never in a reply) tells a lost connection from a refused one."""
    seed(session, name="down", account="acct-down", cash=BUGGY_CASH)
    seed(session, name="up", account="acct-up")
    data = load_market(session, synthetic.MarketSpec(SYMS, DAY, DAY))
    result = engine.tick(session, data.minutes[30], deps=engine.Deps(simulated_broker=_outage))
    got = {r.strategy: (r.outcome, r.error, r.retryable) for r in result.strategies}
    assert got == {
        "down": (StrategyOutcome.FAILED, "DatabaseUnavailable: database unavailable", True),
        "up": (StrategyOutcome.PROCESSED, None, False),
    }
    said = [r.fields for r in caplog.records if r.getMessage() == "strategy failed"]  # type: ignore[attr-defined]
    assert [(f["strategy"], f["detail"]) for f in said] == [
        ("down", "server closed the connection unexpectedly")
    ]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"sma_window": "x"}, "InputError: invalid strategy config: config.sma_window"),
        ({"symbols": "SPY"}, "InputError: invalid strategy config: config.symbols"),
        ({"order_qty": None}, "InputError: invalid strategy config: config.order_qty"),
        ({"nope": 1}, "InputError: invalid strategy config: config.nope"),
    ],
)
def test_bad_config_and_a_bug_fail_alone_while_the_others_run(
    session: Session, config: dict[str, Any], error: str, caplog: pytest.LogCaptureFixture
) -> None:
    seed(session, name="a-bad", account="acct-a")
    seed(session, name="b-bug", account="acct-b", cash=BUGGY_CASH)
    seed(session, name="c-ok", account="acct-c")
    session.execute(
        "update strategy_definitions set config = %s::jsonb where name = 'a-bad'",
        (json.dumps(config),),
    )
    data = load_market(session, synthetic.MarketSpec(SYMS, DAY, DAY))
    result = engine.tick(session, data.minutes[30], deps=engine.Deps(simulated_broker=_buggy))
    got = {r.strategy: (r.outcome, r.error, r.retryable) for r in result.strategies}
    assert got["c-ok"] == (StrategyOutcome.PROCESSED, None, False)
    assert got["a-bad"][0] is StrategyOutcome.FAILED and str(got["a-bad"][1]).startswith(error)
    assert got["b-bug"] == (
        StrategyOutcome.FAILED,
        "ZeroDivisionError: a bug in one strategy's minute",
        False,
    )
    assert result.status == "failed" and not result.retryable
    assert session.fetchall("select status, strategies, decisions from engine_runs") == [("failed", 3, 3)]
    assert session.fetchall("select distinct s.name from strategy_logs l join strategy_definitions s"
                            " on s.id = l.strategy_id") == [("c-ok",)]  # fmt: skip
    ticks = [r for r in caplog.records if r.getMessage() == "tick"]
    assert [r.levelno for r in ticks] == [logging.ERROR]  # a failed run: the alerts' severity too
    tick = ticks[0].fields  # type: ignore[attr-defined]
    assert (tick["run_id"], tick["minute"], tick["trigger"], tick["outcome"]) == (
        str(result.run_id),
        data.minutes[30].isoformat(),
        "manual",
        "failed",
    )
    said = [r for r in caplog.records if r.getMessage() == "strategy failed"]
    assert {r.levelno for r in said} == {logging.ERROR}
    logged = {r.fields["strategy"]: r.fields for r in said}  # type: ignore[attr-defined]
    # `outcome` is the alerts' key (docs/operations.md): the CloudWatch and GCP filters match it.
    assert logged["b-bug"] == {
        "run_id": str(result.run_id),  # the line names the run and minute it failed in
        "strategy": "b-bug",
        "minute": data.minutes[30].isoformat(),
        "error_class": "ZeroDivisionError",
        "error": "a bug in one strategy's minute",
        "outcome": "failed",
    }
    bad = logged["a-bad"]  # failed while planning: before any run or minute
    assert (bad["run_id"], bad["minute"], bad["error_class"], bad["outcome"]) == (
        "None",
        None,
        "InputError",
        "failed",
    )


def test_an_old_running_row_is_closed_as_abandoned(session: Session) -> None:
    seed(session)
    session.execute(
        "insert into engine_runs (id, trigger, minute, status, started_at) values"
        " (gen_random_uuid(), 'cli', now(), 'running', now() - interval '20 minutes'),"
        " (gen_random_uuid(), 'cli', now(), 'running', now() - interval '1 minute')"
    )
    result = engine.tick(
        session, datetime(2025, 6, 14, 15, 0, tzinfo=UTC), deps=engine.Deps(run_timeout_seconds=600)
    )
    rows = session.fetchall("select status, detail->>'closed_by' from engine_runs order by started_at")
    assert rows == [("abandoned", str(result.run_id)), ("running", None), ("market_closed", None)]


def test_kill_9_mid_tick_then_a_later_run_closes_the_row(db_url: str) -> None:
    """A CLI tick blocked on the account row we hold is SIGKILLed; the next run closes its row."""
    with connect(db_url) as s:
        seed(s)
        data = load_market(s, synthetic.MarketSpec(SYMS, DAY, DAY))
    t = data.minutes[30]
    with connect(db_url) as holder, holder.transaction():
        holder.execute("select * from broker_balances for update")
        env = {**os.environ, "PYTHONPATH": f"{REPO}/shared:{REPO}"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "strategy_engine.cli",
                "run",
                "--minute",
                t.isoformat(),
                "--database-url",
                db_url,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with connect(db_url) as watcher:
            for _ in range(600):  # until the process waits on our lock inside its run
                waiting = watcher.fetchone(
                    "select count(*) from pg_locks where not granted and locktype = 'transactionid'"
                )
                if waiting and waiting[0] > 0:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the tick never blocked on the held row")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    with connect(db_url) as s:
        assert s.fetchall("select status from engine_runs") == [("running",)]
        later = engine.tick(s, data.minutes[31], deps=engine.Deps(run_timeout_seconds=0.001))
        assert later.status == "ok"
        rows = s.fetchall("select status from engine_runs order by started_at")
        assert rows == [("abandoned",), ("ok",)]


def test_a_definition_without_an_account_fails_alone(session: Session) -> None:
    seed(session, name="a-none")
    seed(session, name="b-ok", account="acct-b")
    session.execute("update strategy_definitions set account_id = null where name = 'a-none'")
    data = load_market(session, synthetic.MarketSpec(SYMS, DAY, DAY))
    result = engine.tick(session, data.minutes[30])
    got = {r.strategy: (r.outcome, r.error) for r in result.strategies}
    assert got == {
        "a-none": (StrategyOutcome.FAILED, "InputError: no account_id"),
        "b-ok": (StrategyOutcome.PROCESSED, None),
    }
