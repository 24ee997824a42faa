"""Attacks by helper atkK on 10de0bd (engine_runs.relax_commit: the run's bookkeeping commits
with synchronous_commit off) and 3c45bf1 (a lone strategy's claim sent with its BEGIN; since
withdrawn), on real PostgreSQL 16 and 15, the real alpaca-py client and the loopback Alpaca.

Faults it found, now fixed:
- The strategy-minute and the intents committed as the server's default said: on a database
  whose default is off (the suite's PostgreSQL 15), a crash right after a tick lost the minute
  and the intent of an order Alpaca held. Both now pin synchronous_commit on (`session.DURABLE`).
- The claim sent with the BEGIN left the day row locked with no idle timeout armed (a pipeline
  ends Sync then Flush): a worker frozen there kept the strategy `busy` all day. The claim is a
  plain statement again, after which the server arms the timeout.
- `engine.tick` inside a caller's transaction POSTed a lone strategy's orders, then failed to
  record them. It now refuses such a session before anything is read or sent.

Held: the relaxed setting never reaches a decision, order, intent or day-state write (simulated,
lone and batched Alpaca, two Alpaca accounts at once, refused, market closed, failed run, busy,
already processed) nor a later transaction; a failing claim (KeyboardInterrupt before/after it,
lock and statement timeouts, its table renamed, the connection ended; prepared and unprepared);
Ctrl-C while the claim waits; four workers on one minute; kill -9 right after the claim.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.pq import TransactionStatus

from strategy_engine import engine
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.invocation import MinuteRefused, TickPolicy
from strategy_engine.store import Session, connect
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.migrations import migrate
from tests import pg15
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_alpaca_accounts import at, fakes, two_strategies
from tests.test_alpaca_engine import ACCOUNT, deps
from tests.test_attacks_atkJ import _consistent_prepared
from tests.test_bookkeeping_commit import _watch_commit_modes
from tests.test_exactly_once import T, entry_setup
from tests.test_tick_guards import last_run

__all__ = ["fakes"]  # fixture, imported

IDLE = TransactionStatus.IDLE
SIM = engine.Deps(policy=TickPolicy(max_lag_seconds=0, lock_timeout_seconds=0.15))
STRONG = {"symbols": ["SPY"], "min_flow_premium": 20_000}


def _modes(s: Session) -> set[tuple[str, str, str]]:
    return {(t, o, m) for t, o, m in s.fetchall("select distinct tbl, op, mode from commit_modes")}


def _minute_modes(s: Session) -> set[str]:
    """The synchronous_commit of every strategy-minute or intent write (not the bookkeeping)."""
    return {m for t, o, m in _modes(s) if not (t == "engine_runs" or (t, o) == ("strategy_state", "INSERT"))}


def _orders_known(s: Session, *books: FakeAlpaca) -> None:
    """Every order a broker holds has its row (with the broker's id), none twice."""
    rows = s.fetchall("select client_order_id, broker_order_id from paper_trades")
    cids = [c for c, _ in rows]
    assert len(cids) == len(set(cids))
    held = {o["client_order_id"]: o["id"] for b in books for o in b.orders.values()}
    assert held.items() <= dict(rows).items(), (held, rows)


# ---- relax_commit: what runs with synchronous_commit off ---------------------------------------


def test_relaxed_only_the_bookkeeping_on_simulated_lone_and_batched_alpaca(
    session: Session, fake: FakeAlpaca
) -> None:
    """A simulated account of two strategies and an Alpaca account of two (a batch in one
    transaction) in one tick (the lone Alpaca strategy: the tests below): every decision, order,
    intent and day-state update commits synchronously; the session keeps `on` after it."""
    seed(session, name="s1", account="sim-a", config=STRONG)
    seed(session, name="s2", account="sim-a", config={"symbols": ["IWM"], "min_flow_premium": 20_000})
    seed(session, name="b1", account=ACCOUNT, broker="alpaca", config={"symbols": ["DIA"]})
    seed(session, name="b2", account=ACCOUNT, broker="alpaca", config={"symbols": ["XLF"]})
    entry_setup(session, ("SPY", "IWM", "DIA", "XLF"), T)
    _watch_commit_modes(session)
    result = engine.tick(session, T, deps=deps(fake))
    assert {r.strategy: r.outcome for r in result.strategies} == dict.fromkeys(
        ("b1", "b2", "s1", "s2"), StrategyOutcome.PROCESSED
    )
    assert fake.orders_accepted == 2
    _orders_known(session, fake)
    assert _minute_modes(session) == {"on"}
    assert ("paper_trades", "INSERT", "on") in _modes(session)  # the intents
    assert {m for t, _, m in _modes(session) if t == "engine_runs"} == {"off"}
    assert session.fetchone("show synchronous_commit") == ("on",)
    with session.transaction():  # the next transaction on the connection: not relaxed
        session.execute("update strategy_state set updated_at = now()")
    assert session.fetchall(
        "select distinct mode from commit_modes where tbl = 'strategy_state' and op = 'UPDATE'"
    ) == [("on",)]


def test_relaxed_only_the_bookkeeping_with_two_alpaca_accounts_at_once(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    first, second = fakes
    two_strategies(session, (None, "SECOND"))
    _watch_commit_modes(session)
    result = engine.tick(session, T, deps=at(T))
    assert result.status == "ok", result
    assert _minute_modes(session) == {"on"}
    _orders_known(session, first, second)


@pytest.mark.parametrize("path", ["refused", "market-closed", "failed-run", "busy", "already"])
def test_relaxed_paths_leave_the_session_synchronous(
    session: Session, db_url: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    sid = seed(session, config=STRONG)
    entry_setup(session, ("SPY",), T)
    _watch_commit_modes(session)
    if path == "refused":
        with pytest.raises(MinuteRefused):
            engine.tick(session, T, deps=replace(SIM, clock=lambda: T - timedelta(hours=1)))
    elif path == "market-closed":
        assert (
            engine.tick(session, datetime(2025, 6, 14, 15, 0, tzinfo=UTC), deps=SIM).status == "market_closed"
        )
    elif path == "failed-run":
        run_open = engine._run_open

        def then_fail(*args: Any) -> Any:
            run_open(*args)
            raise KeyboardInterrupt

        monkeypatch.setattr(engine, "_run_open", then_fail)
        with pytest.raises(KeyboardInterrupt):
            engine.tick(session, T, deps=SIM)
        assert session.fetchone("select status from engine_runs") == ("failed",)
    elif path == "busy":
        strat_store.ensure_day_rows(session, [sid], T.date())
        with connect(db_url) as other, other.transaction():
            other.execute("select 1 from strategy_state for update")
            assert engine.tick(session, T, deps=SIM).strategies[0].outcome is StrategyOutcome.BUSY
    else:
        engine.tick(session, T, deps=SIM)
        assert engine.tick(session, T, deps=SIM).strategies[0].outcome is StrategyOutcome.ALREADY_PROCESSED
    assert session.conn.info.transaction_status == IDLE
    assert _minute_modes(session) <= {"on"}
    session.execute("update strategy_state set updated_at = now()")  # autocommit, after the tick
    session.execute(
        "insert into engine_runs (id, trigger, minute, status) values (gen_random_uuid(), 'x', now(), 'ok')"
    )
    late = session.fetchall("select mode from commit_modes order by ctid desc limit 1")
    assert late == [("on",)]
    assert session.fetchone("show synchronous_commit") == ("on",)


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
def test_strategy_minutes_and_intents_commit_synchronously_whatever_the_servers_default(
    session: Session, fake: FakeAlpaca, pg_version: str
) -> None:
    """FAILS on [pg15]: the docs and the commit promise that every strategy-minute and intent
    commits synchronously; the engine only turns the bookkeeping off and leaves the rest to the
    server's (database's, role's) default. tests/pg15.py runs 15 with `synchronous_commit = off`
    (as an operator may set it for a database or role): there the decisions, orders, intents and
    day state all commit asynchronously."""
    seed(session, name="lone", account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
    entry_setup(session, ("SPY",), T)
    _watch_commit_modes(session)
    result = engine.tick(session, T, deps=deps(fake))
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED]
    assert fake.orders_accepted == 1
    assert _minute_modes(session) == {"on"}, _modes(session)


# ---- a crash of the database right after a tick (a private PostgreSQL 15) ---------------------


@pytest.fixture(scope="module")
def crash_server() -> Iterator[pg15.Server]:
    """A PostgreSQL 15 of this module's own, set up as tests/pg15.py sets the suite's (fsync off,
    synchronous_commit off), with the WAL writer's longest delay (10 s: what a commit without a
    flush waits for, at most 3 x that), so what an immediate stop loses does not hang on timing."""
    why = pg15.missing()
    if why:
        pytest.skip(why)
    server = pg15.start()
    with (server.folder / "data" / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("wal_writer_delay = 10s\n")
    _ctl(server, "-l", str(server.folder / "log"), "-w", "restart")
    yield server
    server.stop()


def _ctl(server: pg15.Server, *args: str) -> None:
    subprocess.run(
        [str(pg15.BIN / "pg_ctl"), "-D", str(server.folder / "data"), *args],
        check=True,
        capture_output=True,
        text=True,
        user=server.run_as,
        timeout=60,
    )


@pytest.mark.parametrize("default", ["server-default", "on"])
def test_a_database_crash_right_after_a_tick_keeps_the_strategy_minute_and_its_intents(
    crash_server: pg15.Server, fake: FakeAlpaca, default: str
) -> None:
    """`pg_ctl stop -m immediate` (the server's processes killed: WAL not yet written is lost)
    right after a tick that placed an order. With the database's default `on` the minute and
    its intent survive (only the run's close may go: the bookkeeping, as documented). FAILS with
    the server's default (`off`): the order is at Alpaca and nothing of it is in the database."""
    name = f"crash_{default.replace('-', '_')}"
    with connect(crash_server.url) as admin:
        admin.execute(f"drop database if exists {name}")
        admin.execute(f"create database {name}")
        if default == "on":
            admin.execute(f"alter database {name} set synchronous_commit = on")
    url = crash_server.url.replace("/postgres?", f"/{name}?")
    with connect(url) as s:
        migrate(s)
        seed(s, name="lone", account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
        entry_setup(s, ("SPY",), T)
        s.execute("checkpoint")  # the set-up is on disk: only the tick's own writes are at stake
        result = engine.tick(s, T, deps=deps(fake))
        assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED]
    _ctl(crash_server, "-m", "immediate", "stop")
    _ctl(crash_server, "-l", str(crash_server.folder / "log"), "-w", "start")
    assert fake.orders_accepted == 1
    with connect(url) as s:
        _orders_known(s, fake)  # before any re-run: the intent (and the minute's row) stands
        assert last_run(s, "lone") == T


# ---- the claim ---------------------------------------------------------------------------------


def test_a_worker_frozen_right_after_its_claim_is_ended_by_the_idle_timeout(
    session: Session, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A freezes right after its claim (the day row locked, nothing else sent). The claim
    is a plain statement, after which the server arms the idle timeout: A's transaction is ended
    under it, and worker B (the scheduler's retry) processes the minute. Sent with the BEGIN in
    a pipeline (3c45bf1), no timeout was armed and B answered `busy`."""
    seed(session, config=STRONG)
    entry_setup(session, ("SPY",), T)
    policy = engine.Deps(policy=TickPolicy(max_lag_seconds=0, idle_timeout_seconds=0.15))
    claim, froze = strat_store.claim, threading.Event()

    def frozen_after_the_claim(s: Session, *args: Any) -> Any:
        answer = claim(s, *args)
        if not froze.is_set():
            froze.set()
            time.sleep(0.9)
        return answer

    monkeypatch.setattr(strat_store, "claim", frozen_after_the_claim)
    with connect(db_url) as a, ThreadPoolExecutor(1) as pool:
        first = pool.submit(engine.tick, a, T, deps=policy)
        assert froze.wait(5)
        time.sleep(0.5)  # three idle timeouts
        second = engine.tick(session, T, deps=policy)
        first.exception()  # A ends as it may: its transaction was ended under it
    outcomes = [second.strategies[0].outcome]
    assert outcomes == [StrategyOutcome.PROCESSED], second
    assert session.fetchone("select count(*) from paper_trades") == (1,)


@pytest.mark.parametrize("prepare", [False, True], ids=["pooler", "prepared"])
@pytest.mark.parametrize(
    "how", ["interrupt-before", "interrupt-after", "lock-timeout", "statement-timeout", "table-gone", "cut"]
)
def test_a_failing_claim_leaves_nothing_and_the_minute_reruns(
    db_url: str, monkeypatch: pytest.MonkeyPatch, how: str, prepare: bool
) -> None:
    """The claim (prepared on a direct connection) fails: a
    KeyboardInterrupt before or after it is queued, the lock_timeout set with it (a table lock
    held elsewhere: busy), a statement_timeout, a table renamed under it, the connection ended.
    Nothing of the minute is written, the session is IDLE (or, cut, a new one runs), psycopg's
    prepared statements match the server's, and the minute then runs once."""
    minutes = [T - timedelta(minutes=k) for k in (2, 1)]
    with connect(db_url, prepare=prepare) as s, connect(db_url) as other:
        seed(s, config=STRONG)
        entry_setup(s, ("SPY",), T)
        if prepare:
            s.conn.prepare_threshold = 0
        for t in minutes:  # the claim is prepared by now
            assert engine.tick(s, t, deps=SIM).status == "ok"
        claim, armed = strat_store.claim, [True]

        def hooked(ss: Session, *args: Any) -> Any:
            if not armed:
                return claim(ss, *args)
            armed.pop()
            if how == "interrupt-before":
                raise KeyboardInterrupt
            if how in ("lock-timeout", "statement-timeout"):
                other.execute("begin")
                other.execute("lock table strategy_limits in access exclusive mode")
            if how == "statement-timeout":
                ss.conn.execute("select set_config('statement_timeout', '150ms', true)")
            if how == "table-gone":
                other.execute("alter table strategy_limits rename to strategy_limits_away")
            if how == "cut":
                other.execute("select pg_terminate_backend(%s)", (ss.conn.info.backend_pid,))
                time.sleep(0.1)
            out = claim(ss, *args)
            if how == "interrupt-after":
                raise KeyboardInterrupt
            return out

        monkeypatch.setattr(strat_store, "claim", hooked)
        raised: BaseException | None = None
        try:
            result = engine.tick(s, T, deps=SIM)
        except BaseException as exc:
            raised = exc
        if raised is not None:
            assert how in ("interrupt-before", "interrupt-after", "cut"), raised
        else:
            expected = {
                "lock-timeout": (StrategyOutcome.BUSY, True),
                "statement-timeout": (StrategyOutcome.FAILED, True),
                "table-gone": (StrategyOutcome.FAILED, False),
            }[how]
            assert [(r.outcome, r.retryable) for r in result.strategies] == [expected], result
        if how in ("lock-timeout", "statement-timeout"):
            other.execute("rollback")
        if how == "table-gone":
            other.execute("alter table strategy_limits_away rename to strategy_limits")
        assert other.fetchone("select count(*) from strategy_logs where decision_minute = %s", (T,)) == (0,)
        assert other.fetchone("select count(*) from paper_trades where decision_minute = %s", (T,)) == (0,)
        assert last_run(other, "nft") == minutes[-1]
        if how != "cut":
            assert s.conn.info.transaction_status == IDLE
            if prepare:
                _consistent_prepared(s)
            again = engine.tick(s, T, deps=SIM)
            assert s.prepare is prepare
        else:
            with connect(db_url, prepare=prepare) as fresh:
                again = engine.tick(fresh, T, deps=SIM)
        assert [r.outcome for r in again.strategies] == [StrategyOutcome.PROCESSED]
        assert other.fetchone("select count(*) from strategy_logs where decision_minute = %s", (T,)) == (1,)
        assert last_run(other, "nft") == T
        assert other.fetchall("select state from pg_stat_activity where state like 'idle in%%'") == []


@pytest.mark.parametrize("prepare", [False, True], ids=["pooler", "prepared"])
def test_ctrl_c_while_the_claim_waits_leaves_the_session_idle(db_url: str, prepare: bool) -> None:
    """SIGINT while the claim waits (behind a table lock held
    elsewhere, lock_timeout 5 s): psycopg cancels, the transaction is rolled back, the session is
    IDLE with psycopg's prepared statements the server's, the run is closed `failed`, and the
    minute then runs."""
    with connect(db_url, prepare=prepare) as s, connect(db_url) as other:
        seed(s, config=STRONG)
        entry_setup(s, ("SPY",), T)
        if prepare:
            s.conn.prepare_threshold = 0
        patient = engine.Deps(policy=TickPolicy(max_lag_seconds=0, lock_timeout_seconds=5))
        claim = strat_store.claim

        def behind_a_lock(ss: Session, *args: Any) -> Any:
            other.execute("begin")
            other.execute("lock table strategy_state in access exclusive mode")
            threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            return claim(ss, *args)

        strat_store.claim = behind_a_lock  # type: ignore[assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                engine.tick(s, T, deps=patient)
        finally:
            strat_store.claim = claim
            other.execute("rollback")
        assert s.conn.info.transaction_status == IDLE
        assert (s._piped, s._ends, s._sealed) == (0, None, False)
        if prepare:
            _consistent_prepared(s)
        assert other.fetchall("select status from engine_runs") == [("failed",)]
        assert other.fetchone("select count(*) from strategy_logs") == (0,)
        again = engine.tick(s, T, deps=patient)
        assert [r.outcome for r in again.strategies] == [StrategyOutcome.PROCESSED]


def test_two_workers_on_one_minute_one_processes_the_other_busy_or_already(db_url: str) -> None:
    """Four workers (two prepared) tick one minute of a lone simulated strategy at once: one
    processes, the rest answer busy or already_processed, one order."""
    with connect(db_url) as s:
        seed(s, config=STRONG)
        entry_setup(s, ("SPY",), T)
    go = threading.Barrier(4)

    def worker(k: int) -> StrategyOutcome:
        with connect(db_url, prepare=bool(k % 2)) as s:
            go.wait()
            return engine.tick(s, T, deps=SIM).strategies[0].outcome

    with ThreadPoolExecutor(4) as pool:
        got = sorted(o.value for o in pool.map(worker, range(4)))
    assert got.count("processed") == 1, got
    assert set(got) <= {"processed", "busy", "already_processed"}, got
    with connect(db_url) as s:
        assert s.fetchone("select count(*) from paper_trades") == (1,)
        assert s.fetchone("select count(*) from strategy_logs") == (1,)


def _die_after_the_claim(db: str, minute: str, url: str, key: str, secret: str) -> None:
    """`tests.kill_points`, killed (os._exit 137) right after the claim answered: the day row
    locked, nothing else sent."""
    from tests import kill_points

    claim = strat_store.claim

    def then_die(s: Session, *args: Any) -> Any:
        claim(s, *args)
        os._exit(kill_points.KILLED)

    strat_store.claim = then_die  # type: ignore[assignment]
    kill_points.main(db, minute, "none", "none", url, key, secret)


def test_kill_right_after_the_claim_of_a_lone_alpaca_strategy(db_url: str, fake: FakeAlpaca) -> None:
    syms = ("IWM", "QQQ", "SPY")
    with connect(db_url) as s:
        seed(s, name="lone", account=ACCOUNT, broker="alpaca", config={"symbols": list(syms)})
        entry_setup(s, syms, T)
    cmd = [sys.executable, "-m", "tests.test_attacks_atkK", db_url, T.isoformat(), fake.url, KEY, SECRET]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'shared'}{os.pathsep}{REPO}"}
    killed = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, check=False, env=env)
    assert killed.returncode == 137, killed.stderr[-3000:]
    assert fake.requests["POST /v2/orders"] == 0
    with connect(db_url) as s:
        assert last_run(s, "lone") is None
        assert s.fetchone("select count(*) from paper_trades") == (0,)
        runs = [engine.tick(s, T, deps=deps(fake)) for _ in range(2)]
        assert [r.strategies[0].outcome for r in runs] == [
            StrategyOutcome.PROCESSED,
            StrategyOutcome.ALREADY_PROCESSED,
        ]
        _orders_known(s, fake)
        assert s.fetchone("select count(*) from paper_trades") == (len(syms),)
    assert fake.requests["POST /v2/orders"] == len(fake.orders) == len(syms)


# ---- engine.tick inside a caller's transaction -------------------------------------------------


@pytest.mark.parametrize("broker", ["alpaca", "simulated"])
def test_a_tick_inside_a_callers_transaction_is_refused_before_anything_is_sent(
    session: Session, fake: FakeAlpaca, broker: str
) -> None:
    """A lone strategy's transaction inside a caller's would be a savepoint: its orders were
    POSTed, then its COMMIT (`commit_in_pipeline`) refused, failed and not retryable, every retry
    the same. The tick now refuses such a session before anything is read or sent."""
    alpaca = broker == "alpaca"
    seed(session, account=ACCOUNT if alpaca else "sim", broker=broker, config=STRONG)
    entry_setup(session, ("SPY",), T)
    with session.transaction(), pytest.raises(RuntimeError, match="outside any transaction"):
        engine.tick(session, T, deps=deps(fake) if alpaca else SIM)
    assert sum(fake.requests.values()) == 0
    assert session.fetchall(
        "select count(*) from engine_runs union all select count(*) from paper_trades"
    ) == [
        (0,),
        (0,),
    ]
    result = engine.tick(session, T, deps=deps(fake) if alpaca else SIM)  # outside: it runs
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED]
    _orders_known(session, fake)


if __name__ == "__main__":
    _die_after_the_claim(*sys.argv[1:])
