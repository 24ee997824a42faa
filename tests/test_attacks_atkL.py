"""Attacks by helper atkL on 4a10de5: `session.DURABLE` (strategy-minutes and intents commit
synchronously whatever the database's or role's default), `engine.tick` refusing a session not
idle, and the loopback Alpaca handling nothing of a request whose body never arrived.

Faults it found, all fixed (the tests marked Fixed failed before):
- A Session over a connection not in autocommit passes the guard: the lone strategy's order is
  POSTed, then its COMMIT refused (atkK's fault through another door).
- A tick inside a caller's pipeline (nothing queued: IDLE) reads, GETs Alpaca, writes a failed,
  non-retryable run.
- A tick on a connection an outage broke raises RuntimeError (a caller's bug), not
  DatabaseUnavailable.
- Beyond the claim: the kill switch (`strategy disable`) commits with the database's default.
- The fake: Content-Length -1 hangs the client, `abc` resets it; a client killed mid-body uses
  up the fault a test injected for the next request.

Held: manual trades, intents (write, gave_up, void), lone, batched and simulated minutes commit
`on` on a database (15) or role default of `off`, prepared and unprepared; nothing leaks to the
session afterwards; DURABLE keeps local/remote_write/remote_apply; an aborted transaction is
refused and the next tick runs; Content-Length 0 and chunked orders get a 422, no hang.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import psycopg
import pytest

from strategy_engine import engine, manual_trade
from strategy_engine.core.errors import DatabaseUnavailable
from strategy_engine.core.models import OrderIntent, Side, StrategyOutcome
from strategy_engine.store import Session, connect
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.intents import IntentLog
from strategy_engine.store.session import DURABLE
from tests.conftest import seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT, deps
from tests.test_bookkeeping_commit import _watch_commit_modes
from tests.test_exactly_once import T, entry_setup

STRONG = {"symbols": ["SPY"], "min_flow_premium": 20_000}
TABLES = (
    "paper_trades",
    "strategy_state",
    "strategy_logs",
    "broker_balances",
    "broker_positions",
    "strategy_definitions",
    "engine_runs",
)


def _watch(s: Session) -> None:
    _watch_commit_modes(s, TABLES)


def _modes(s: Session, *tables: str) -> set[str]:
    """The modes of these tables' writes, but the day rows' INSERT (the relaxed bookkeeping)."""
    rows = s.fetchall("select tbl, op, mode from commit_modes where tbl = any(%s)", (list(tables),))
    return {m for t, o, m in rows if (t, o) != ("strategy_state", "INSERT")}


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


# ---- DURABLE --------------------------------------------------------------------------------


@pytest.mark.parametrize("pg_version", ["15"], indirect=True)
def test_a_manual_alpaca_trade_commits_synchronously_on_a_database_whose_default_is_off(
    session: Session, fake: FakeAlpaca, pg_version: str
) -> None:
    seed(session, account=ACCOUNT, broker="alpaca")
    entry_setup(session, ("SPY",), T)
    _watch(session)
    assert session.fetchone("show synchronous_commit") == ("off",)
    d = deps(fake)
    d.clock = lambda: T
    order = manual_trade.manual_trade(session, ACCOUNT, "SPY", "buy", 2, deps=d)
    assert order.status == "accepted"
    assert _modes(session, "paper_trades", "broker_balances", "broker_positions") == {"on"}
    assert session.fetchone("show synchronous_commit") == ("off",)  # nothing leaks past it


@pytest.mark.parametrize("prepare", [False, True])
def test_a_role_in_database_default_of_off_is_overridden_and_does_not_leak(
    db_url: str, fake: FakeAlpaca, prepare: bool
) -> None:
    """A role-level (in this database) `synchronous_commit = off`; prepared and unprepared
    sessions, three ticks so statements get prepared: minutes synchronous, the session off again."""
    with connect(db_url) as admin:
        admin.execute(f"alter role current_user in database {_dbname(db_url)} set synchronous_commit = off")
        seed(admin, name="lone", account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
        seed(admin, name="sim", account="sim", config=STRONG)
        entry_setup(admin, ("SPY",), T)
        _watch(admin)
    try:
        with connect(db_url, prepare=prepare) as s:
            assert s.fetchone("show synchronous_commit") == ("off",)
            for k in range(3):
                engine.tick(s, T.replace(minute=T.minute + k), deps=deps(fake))
                assert s.fetchone("show synchronous_commit") == ("off",)
            assert _modes(s, "paper_trades", "strategy_state", "strategy_logs") <= {"on"}
            assert _modes(s, "strategy_logs") == {"on"}
    finally:
        with connect(db_url) as admin:
            admin.execute(f"alter role current_user in database {_dbname(db_url)} reset synchronous_commit")


@pytest.mark.parametrize("setting", ["local", "remote_write", "remote_apply", "on", "off"])
def test_durable_keeps_any_setting_but_off(session: Session, setting: str) -> None:
    with session.transaction():
        session.execute(f"set local synchronous_commit = {setting}")
        session.execute(f"select {DURABLE}")
        got = session.fetchone("show synchronous_commit")
    assert got == ("on" if setting == "off" else setting,)
    assert session.fetchone("show synchronous_commit") == ("on",)


@pytest.mark.parametrize("pg_version", ["15"], indirect=True)
def test_the_kill_switch_commits_with_the_databases_default(session: Session, pg_version: str) -> None:
    """Beyond the claim's letter: `strategy disable` (the kill switch) and the limits commit with
    synchronous_commit off on such a database: a crash right after `disable` printed
    "inactive (kill switch on)" may bring the strategy back active. Fixed."""
    seed(session, name="k", config=STRONG)
    _watch(session)
    assert strat_store.set_active(session, "k", False)
    assert _modes(session, "strategy_definitions") == {"on"}


@pytest.mark.parametrize("pg_version", ["15"], indirect=True)
def test_intent_write_void_and_gave_up_commit_synchronously_and_leave_the_side_session_off(
    session: Session, pg_version: str
) -> None:
    seed(session, account=ACCOUNT, broker="alpaca")
    found = acct_store.find_account(session, ACCOUNT)
    assert found is not None
    _watch(session)
    log = IntentLog(session)
    try:
        intents = [
            OrderIntent("SPY", Side.BUY, 1.0, 10.0, "atkl-a"),
            OrderIntent("QQQ", Side.BUY, 1.0, 10.0, "atkl-b"),
        ]
        assert log.write(None, found[0].id, "manual", T, intents) == {"atkl-a", "atkl-b"}
        log.gave_up("atkl-a", "boom")
        log.void(["atkl-a", "atkl-b"], "not at the broker")
        side = log._session()
        assert side.fetchone("show synchronous_commit") == ("off",)
    finally:
        log.close()
    rows = session.fetchall("select op, mode from commit_modes where tbl = 'paper_trades'")
    assert sorted(rows) == [("INSERT", "on")] * 2 + [("UPDATE", "on")] * 3, rows


@pytest.mark.parametrize("pg_version", ["15"], indirect=True)
def test_a_batched_alpaca_account_and_a_simulated_one_commit_synchronously_on_15(
    session: Session, fake: FakeAlpaca, pg_version: str
) -> None:
    seed(session, name="b1", account=ACCOUNT, broker="alpaca", config={"symbols": ["DIA"]})
    seed(session, name="b2", account=ACCOUNT, broker="alpaca", config={"symbols": ["XLF"]})
    seed(session, name="s1", account="sim", config=STRONG)
    entry_setup(session, ("SPY", "DIA", "XLF"), T)
    _watch(session)
    result = engine.tick(session, T, deps=deps(fake))
    assert {r.outcome for r in result.strategies} == {StrategyOutcome.PROCESSED}
    assert fake.orders_accepted == 2
    assert _modes(
        session, "paper_trades", "strategy_state", "strategy_logs", "broker_balances", "broker_positions"
    ) == {"on"}
    assert session.fetchone("show synchronous_commit") == ("off",)


# ---- tick refusal ---------------------------------------------------------------------------


def test_a_tick_inside_a_callers_pipeline_is_refused_before_anything_is_sent(
    session: Session, fake: FakeAlpaca
) -> None:
    """A pipeline with nothing queued yet reads IDLE: the tick reads the plan, writes an
    engine_runs row and GETs the account from Alpaca, then every strategy fails on `a
    transaction with timeouts cannot begin inside a pipeline`. Fixed."""
    seed(session, name="lone", account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
    entry_setup(session, ("SPY",), T)
    with session.pipeline(), pytest.raises(RuntimeError):
        engine.tick(session, T, deps=deps(fake))
    assert sum(fake.requests.values()) == 0, dict(fake.requests)
    assert session.fetchone("select count(*) from engine_runs") == (0,)


def test_a_tick_on_a_connection_not_in_autocommit_is_refused_before_anything_is_sent(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    """`Session(conn)` over a psycopg connection not in autocommit reads IDLE at the guard; the
    plan's first read then opens a transaction, the lone strategy's becomes a savepoint, its order
    is POSTed, then `commit_in_pipeline` refuses: failed, not retryable, the order at Alpaca
    with only its intent, and the run row lost with the caller's never-committed transaction.
    atkK's fault through another door. Fixed."""
    seed(session, name="lone", account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
    entry_setup(session, ("SPY",), T)
    with Session(psycopg.connect(db_url)) as s:
        assert s.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE and not s.conn.autocommit
        with pytest.raises(RuntimeError):
            engine.tick(s, T, deps=deps(fake))
    assert fake.requests["POST /v2/orders"] == 0, dict(fake.requests)


def test_a_tick_on_a_broken_connection_says_database_unavailable(session: Session, db_url: str) -> None:
    """After an outage the connection's status is UNKNOWN: the retry on the same session gets
    RuntimeError `call it outside any transaction` (a caller's bug, not retryable) instead of
    DatabaseUnavailable. Fixed."""
    seed(session, config=STRONG)
    entry_setup(session, ("SPY",), T)
    pid = session.conn.info.backend_pid
    with connect(db_url) as admin:
        admin.execute("select pg_terminate_backend(%s)", (pid,))
    with pytest.raises(DatabaseUnavailable):
        engine.tick(session, T, deps=engine.Deps())
    with pytest.raises(DatabaseUnavailable):
        engine.tick(session, T, deps=engine.Deps())


def test_a_tick_in_an_aborted_transaction_is_refused_and_the_next_runs(session: Session) -> None:
    seed(session, config=STRONG)
    entry_setup(session, ("SPY",), T)
    session.conn.execute("begin")
    with pytest.raises(psycopg.errors.DivisionByZero):
        session.conn.execute("select 1/0")
    assert session.conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    with pytest.raises(RuntimeError, match="outside any transaction"):
        engine.tick(session, T)
    session.conn.execute("rollback")
    assert session.fetchone("select count(*) from engine_runs") == (0,)
    assert [r.outcome for r in engine.tick(session, T).strategies] == [StrategyOutcome.PROCESSED]


# ---- the loopback Alpaca --------------------------------------------------------------------


def _raw(fake: FakeAlpaca, request: bytes, wait: float = 2.0) -> bytes:
    """Send `request` and read until the server closes or `wait` passes (b"" : no answer)."""
    u = urlsplit(fake.url)
    with socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=wait) as sock:
        sock.sendall(request)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        return got


def _cut(fake: FakeAlpaca, request: bytes) -> None:
    """Send `request` and close at once: a client killed before its body was all sent."""
    u = urlsplit(fake.url)
    with socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=2) as sock:
        sock.sendall(request)


def _post(body: bytes, length: str | None, extra: str = "") -> bytes:
    head = (
        f"POST /v2/orders HTTP/1.1\r\nHost: x\r\nAPCA-API-KEY-ID: {KEY}\r\nAPCA-API-SECRET-KEY: {SECRET}\r\n"
    )
    head += "Content-Type: application/json\r\n" + extra
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode() + body


ORDER = json.dumps(
    {
        "symbol": "SPY",
        "side": "buy",
        "qty": "1",
        "type": "market",
        "time_in_force": "day",
        "client_order_id": "atkl-1",
    }
).encode()


@pytest.mark.parametrize("length", ["-1", "abc", "0"])
def test_a_bad_content_length_gets_a_4xx_not_a_hang_or_a_reset(fake: FakeAlpaca, length: str) -> None:
    """A real server answers 400 to a Content-Length it cannot use; failed for -1 (the fake reads
    to EOF: the client waits, the fake waits) and `abc` (the handler raises: no answer)."""
    got = _raw(fake, _post(ORDER, length))
    assert got.startswith(b"HTTP/1."), got[:80]
    assert got.split(b" ", 2)[1][:1] == b"4", got[:80]
    assert fake.orders_accepted == 0


def test_a_chunked_order_is_not_placed_as_an_empty_one(fake: FakeAlpaca) -> None:
    body = f"{len(ORDER):x}\r\n".encode() + ORDER + b"\r\n0\r\n\r\n"
    got = _raw(fake, _post(body, None, "Transfer-Encoding: chunked\r\n"))
    assert got.startswith(b"HTTP/1."), got[:80]
    status = got.split(b" ", 2)[1]
    assert status == b"200" or status[:1] == b"4", got[:200]  # placed as sent, or refused
    assert status != b"200" or fake.by_client_id("atkl-1") is not None


def test_a_request_whose_body_never_arrived_does_not_use_up_an_injected_fault(fake: FakeAlpaca) -> None:
    """The fix returns after `Faults.take`: a client killed mid-body consumes the 500 a test set
    for the next order (and counts as a request), so the order after it is placed. Fixed."""
    fake.fail("POST /v2/orders", 500)
    _cut(fake, _post(ORDER[:10], str(len(ORDER))))  # then the client goes away
    deadline = time.monotonic() + 2
    while fake.requests["POST /v2/orders"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    got = _raw(fake, _post(ORDER, str(len(ORDER))))
    assert got.split(b" ", 2)[1] == b"500", got[:80]
    assert fake.orders_accepted == 0
