"""Exactly once on the real server: concurrent processes, a crash before commit, two workers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strategy_engine import engine
from strategy_engine.store import Session, connect
from strategy_engine.store import strategies as strat_store
from tests.conftest import REPO, seed

T = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)
SYMS = ("IWM", "QQQ", "SPY")
CLI = [sys.executable, "-m", "strategy_engine.cli"]


def entry_setup(s: Session, symbols: tuple[str, ...], minute: datetime) -> None:
    """25 rising bars up to T-1 and strong bullish flow: every symbol wants to enter long at T."""
    s.execute(
        """
        insert into market_data_1m (symbol, ts, open, high, low, close, volume)
        select sym, %(t)s - make_interval(mins => k), 100, 100, 100, 100 - k * 0.5, 1000
        from unnest(%(syms)s::text[]) sym, generate_series(1, 25) k
        """,
        {"t": minute, "syms": list(symbols)},
    )
    s.execute(
        "insert into options_flow (ts, underlying, option_type, side, size, trade_price)"
        " select %s, sym, 'call', 'buy', 500, 5 from unnest(%s::text[]) sym",
        (minute - timedelta(minutes=2), list(symbols)),
    )


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--database-url", db_url],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _trades(s: Session) -> list[tuple[Any, ...]]:
    return s.fetchall("select strategy_id, symbol, client_order_id from paper_trades order by 1, 2")


@pytest.mark.slow
def test_eight_processes_on_one_minute_place_each_order_once(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    with ThreadPoolExecutor(8) as pool:
        procs = list(pool.map(lambda _: _cli(db_url, "run", "--minute", T.isoformat(), "--json"), range(8)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    outcomes = sorted(json.loads(p.stdout)["strategies"][0]["outcome"] for p in procs)
    assert outcomes.count("processed") == 1
    assert set(outcomes) <= {"processed", "busy", "already_processed"}
    with connect(db_url) as s:
        assert len(_trades(s)) == 3
        assert s.fetchone("select count(*) from strategy_logs") == (3,)
        assert s.fetchone("select count(*) from engine_runs") == (8,)


KILLER = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime
    from strategy_engine import engine
    from strategy_engine.brokers.simulated import SimulatedBroker
    from strategy_engine.store import connect

    class DiesAfterTheBrokerAnswers(SimulatedBroker):
        def submit(self, intent):
            order = super().submit(intent)
            os._exit(137)  # killed between the broker's answer and the commit

    deps = engine.Deps(simulated_broker=lambda a, p, m, slip: DiesAfterTheBrokerAnswers(a.cash, p, slip, now=m))
    with connect(sys.argv[1]) as s:
        engine.tick(s, datetime.fromisoformat(sys.argv[2]), deps=deps)
    """
)


def test_a_process_killed_before_commit_leaves_a_minute_the_retry_completes_once(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, db_url, T.isoformat()],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr
    with connect(db_url) as s:
        # nothing of the minute survived: no decision, no trade, no advanced state, no fill
        assert s.fetchone("select count(*) from strategy_logs") == (0,)
        assert _trades(s) == []
        assert s.fetchone("select count(*) from broker_positions") == (0,)
        assert s.fetchone("select last_run_minute from strategy_state") in (None, (None,))
        retry = engine.tick(s, T)
        again = engine.tick(s, T)
        assert retry.orders == 3 and again.orders == 0
        assert len(_trades(s)) == 3
        assert s.fetchone("select count(*), sum(qty) from broker_positions") == (3, 3.0)


@pytest.mark.slow
def test_two_workers_process_each_of_several_strategies_once_per_minute(db_url: str) -> None:
    names = [f"s{i}" for i in range(6)]
    with connect(db_url) as s:
        for n in names:
            seed(s, name=n, account=f"acct-{n}", config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
        entry_setup(s, SYMS, T + timedelta(minutes=30))
    for minute in (T, T + timedelta(minutes=1)):
        with ThreadPoolExecutor(2) as pool:
            procs = list(
                pool.map(
                    lambda _, m=minute: _cli(db_url, "run", "--minute", m.isoformat(), "--json"), range(2)
                )
            )
        assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
        seen: dict[str, list[str]] = {n: [] for n in names}
        for p in procs:
            for r in json.loads(p.stdout)["strategies"]:
                seen[r["strategy"]].append(r["outcome"])
        for n in names:
            assert seen[n].count("processed") == 1, (n, seen[n])
    with connect(db_url) as s:
        per_minute = s.fetchall(
            "select strategy_id, decision_minute, count(*) from strategy_logs group by 1, 2"
        )
        assert len(per_minute) == 6 * 2 and all(c == 3 for _, _, c in per_minute)
        assert len(_trades(s)) == 6 * 3  # every strategy entered all three symbols at T, once


def test_a_claimed_day_row_is_skipped_never_waited_for(db_url: str) -> None:
    """The claim is FOR UPDATE SKIP LOCKED: while one worker holds a strategy's day row, a second
    worker's claim answers None at once. Asked under a 30 s lock timeout, a claim that waited
    would show in pg_stat_activity as waiting on a lock: the watcher then cancels it and the
    test fails at once (no timing: the answer is whether the backend ever waited)."""
    with connect(db_url) as a, connect(db_url) as b, connect(db_url) as watcher:
        sid = seed(a)
        day = T.date()
        strat_store.ensure_day_rows(a, [sid], day)
        with a.transaction():
            assert strat_store.claim(a, sid, day) is not None
            with b.transaction(lock_timeout=30), ThreadPoolExecutor(1) as pool:
                second = pool.submit(strat_store.claim, b, sid, day)
                waited = False
                while not second.done():
                    row = watcher.fetchone(
                        "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s",
                        (b.conn.info.backend_pid,),
                    )
                    if row is not None and row[0]:
                        waited = True
                        watcher.execute("select pg_cancel_backend(%s)", (b.conn.info.backend_pid,))
                        break
                assert not waited, "the second claim waited for the first worker's lock"
                assert second.result() is None
        with a.transaction():  # released with the first worker's transaction: claimable again
            assert strat_store.claim(a, sid, day) is not None
