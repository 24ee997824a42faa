"""Second round of attacks on the order path of issue 17 (one transaction per Alpaca account,
reads sent ahead, the deadline, connections lost mid-batch, manual trades, limits across the
strategies of a batch), kept as regression tests. Each docstring says whether it broke the first
version ("BROKE": fixed since, the test shows the fix) or held.

Real Postgres, the real alpaca-py client and the loopback Alpaca (`tests/fake_alpaca`).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from strategy_engine import concurrency, engine, execution, manual_trade
from strategy_engine.brokers.base import Broker
from strategy_engine.core.errors import BrokerUnavailable, Busy, InputError, OrderRejected
from strategy_engine.core.models import Limits, Order, OrderIntent, StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_account_batch_attacks import hooked
from tests.test_alpaca_accounts import at, fakes, outcomes, two_strategies
from tests.test_alpaca_engine import ACCOUNT, deps, trades
from tests.test_exactly_once import T, entry_setup

__all__ = ["fakes"]  # a fixture, imported
BOOKS = {"a": ("IWM",), "b": ("SPY",), "c": ("QQQ",)}


def books(s: Session, *, sim: bool = False, limits: dict[str, Limits] | None = None) -> None:
    for name, symbols in BOOKS.items():
        lim = (limits or {}).get(name)
        seed(s, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)}, limits=lim)
    if sim:  # a simulated account, after the Alpaca one in plan order, on the caller's connection
        seed(s, name="z", account="sim", broker="simulated", config={"symbols": ["DIA"]})
    entry_setup(s, ("IWM", "SPY", "QQQ", "DIA"), T)


def calls_under_way() -> int:
    """Requests the tick started that still run (the I/O pool's threads outlive it, idle)."""
    return concurrency.busy()


def last_runs(s: Session) -> dict[str, Any]:
    rows = s.fetchall(
        "select d.name, st.last_run_minute from strategy_state st"
        " join strategy_definitions d on d.id = st.strategy_id"
    )
    return {r[0]: r[1] for r in rows}


def rows_by_symbol(s: Session) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r for r in trades(s)}


# ---------------------------------------------------------------------------------------------
# 1. The deadline passing in the middle of a batch.
# ---------------------------------------------------------------------------------------------


def test_deadline_passing_after_the_first_strategy_sent_records_its_orders_and_sends_nothing_more(
    session: Session, fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HELD. a is staged and its order launched; then the invocation's clock passes the deadline
    (injected clock jumps). b and c must not start (`deadline`, no intent, no POST); a's order is
    recorded with the broker's answer; the run is `deadline`; the retry runs b and c once."""
    books(session)
    jumped = threading.Event()
    carry = execution.carry  # type: ignore[attr-defined]

    def carry_then_jump(*args: Any) -> None:  # called right after a strategy's orders are launched
        carry(*args)
        jumped.set()

    monkeypatch.setattr(execution, "carry", carry_then_jump)
    start = datetime.now(T.tzinfo)

    def clock() -> datetime:
        return start + (timedelta(seconds=100) if jumped.is_set() else timedelta(0))

    d = replace(deps(fake), clock=clock, policy=TickPolicy(max_lag_seconds=0, deadline_seconds=45))
    result = engine.tick(session, T, deps=d)
    assert [(r.strategy, r.outcome) for r in result.strategies] == [
        ("a", StrategyOutcome.PROCESSED),
        ("b", StrategyOutcome.DEADLINE),
        ("c", StrategyOutcome.DEADLINE),
    ]
    assert result.status == "deadline"
    assert fake.requests["POST /v2/orders"] == 1
    (iwm,) = fake.orders.values()
    assert list(rows_by_symbol(session)) == ["IWM"]  # no intent for b or c
    assert rows_by_symbol(session)["IWM"][2] == iwm["id"]
    assert last_runs(session) == {"a": T, "b": None, "c": None}
    monkeypatch.setattr(execution, "carry", carry)
    again = engine.tick(session, T, deps=deps(fake))
    assert [r.outcome for r in again.strategies] == [
        StrategyOutcome.ALREADY_PROCESSED, StrategyOutcome.PROCESSED, StrategyOutcome.PROCESSED,
    ]  # fmt: skip
    assert fake.requests["POST /v2/orders"] == 3
    assert sorted(rows_by_symbol(session)) == ["IWM", "QQQ", "SPY"]


def test_send_by_passing_while_a_batchs_posts_wait_leaves_no_order_without_a_row(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. deadline 1 s; a's POST goes at once, b's and c's POSTs are held until the wall clock
    has passed `send_by`: the broker refuses them before any attempt (NotSent), their intents are
    voided, a's order is recorded; outcome a processed, b and c `deadline`; every order Alpaca
    holds has its row with the broker's id."""
    books(session)

    def on_submit(intent: OrderIntent, inner: Broker) -> Order:
        if intent.symbol != "IWM":
            assert intent.send_by is not None
            while datetime.now(intent.send_by.tzinfo) < intent.send_by + timedelta(milliseconds=50):
                time.sleep(0.02)
        return inner.submit(intent)

    d = replace(
        hooked(deps(fake), on_submit=on_submit), policy=TickPolicy(max_lag_seconds=0, deadline_seconds=1.0)
    )
    result = engine.tick(session, T, deps=d)
    assert [(r.strategy, r.outcome) for r in result.strategies] == [
        ("a", StrategyOutcome.PROCESSED),
        ("b", StrategyOutcome.DEADLINE),
        ("c", StrategyOutcome.DEADLINE),
    ]
    assert result.status == "deadline"
    assert fake.requests["POST /v2/orders"] == 1
    rows = rows_by_symbol(session)
    assert {k: v[3] for k, v in rows.items()} == {"IWM": "accepted", "SPY": "void", "QQQ": "void"}
    for o in fake.orders.values():
        assert rows[o["symbol"]][2] == o["id"]
    # a void row says why: refused by the sender before any attempt, past its send-by time
    voided = session.fetchall("select error from paper_trades where status = 'void'")
    assert len(voided) == 2 and all(
        re.fullmatch(r"not sent: past the invocation's deadline \(\S+\): not sent", e) for (e,) in voided
    ), voided


# ---------------------------------------------------------------------------------------------
# 2. The batch's connection lost while its POSTs are in flight.
# ---------------------------------------------------------------------------------------------


def test_a_connection_lost_mid_batch_leaves_no_post_running_after_the_tick(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    """BROKE, fixed. a's POST is slow; while it travels the batch's connection (the caller's: one
    Alpaca account) is terminated. b and c fail at once, and a's record phase failed on its
    SAVEPOINT before its answer was awaited, so nothing waited for a's POST: the tick raised while
    the POST still ran on its thread (on Lambda it could resume in a later invocation, long after
    `send_by` was checked), its intent not marked given up. Now `_record` awaits the answers
    first, and every account group awaits its orders' answers on the way out (`fanout`)."""
    books(session)
    pid = session.conn.info.backend_pid
    killed = threading.Event()

    def on_submit(intent: OrderIntent, inner: Broker) -> Order:
        if intent.symbol == "IWM" and not killed.is_set():
            with connect(db_url) as other:
                other.execute("select pg_terminate_backend(%s)", (pid,))
            killed.set()
            time.sleep(1.0)  # the POST is still travelling when the tick gives up
        return inner.submit(intent)

    with pytest.raises(Exception):  # noqa: B017, PT011  the caller's connection is gone
        engine.tick(session, T, deps=hooked(deps(fake), on_submit=on_submit))
    assert calls_under_way() == 0, "a POST launched by the tick was still running after the tick returned"


def test_the_idle_timeout_ending_one_accounts_batch_fails_that_account_alone(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HELD. Two Alpaca accounts (two batches on their own connections) plus nothing else; the
    server's idle_in_transaction timeout (0.5 s) ends alpaca-a's transaction while its POST
    takes 2 s to answer. a fails (retryable), b is processed, the run is `failed` and closed;
    a's order landed and the retry reconciles it without sending it again."""
    first, _ = fakes
    two_strategies(session, (None, "SECOND"))
    first.slow("POST /v2/orders", 2.0)
    d = replace(at(T), policy=TickPolicy(max_lag_seconds=90, idle_timeout_seconds=0.5))
    result = engine.tick(session, T, deps=d)
    got = outcomes(result)
    assert got["a"][0] is StrategyOutcome.FAILED, got
    assert "DatabaseUnavailable" in (got["a"][1] or ""), got  # the idle timeout ended it
    assert got["b"] == (StrategyOutcome.PROCESSED, None)
    assert result.status == "failed" and result.retryable
    assert session.fetchone("select status from engine_runs") == ("failed",)
    again = engine.tick(session, T, deps=at(T))
    assert outcomes(again)["a"][0] is StrategyOutcome.PROCESSED
    # One order at Alpaca (a POST the client timed out on is re-sent with the same client id and
    # adopted as the duplicate it is), and the retry sent nothing more.
    assert len(first.orders) == 1
    (row,) = [r for r in trades(session) if r[0] == "IWM"]
    assert row[2] == next(iter(first.orders.values()))["id"]


# ---------------------------------------------------------------------------------------------
# 3. Manual trades and the batch.
# ---------------------------------------------------------------------------------------------


def test_a_manual_trade_that_died_after_its_post_then_a_tick_with_reads_sent_ahead(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. The manual buy of IWM lands at Alpaca, then its answer is lost (its transaction, with
    its mirror write, rolls back; its intent stays). The tick's reads were not yet sent; the
    batch's strategy a (IWM, max_position_size 1) must see the manual IWM: no second IWM."""
    books(session, limits={"a": Limits(max_position_size=1)})
    fake.set_policy("manual")  # the manual order stays working

    def lost_answer(intent: OrderIntent, inner: Broker) -> Order:
        inner.submit(intent)
        raise BrokerUnavailable("Alpaca POST /v2/orders: read timed out")

    d = hooked(deps(fake), on_submit=lost_answer)
    d.clock = lambda: T
    with pytest.raises(BrokerUnavailable):
        manual_trade.manual_trade(session, ACCOUNT, "IWM", "buy", 1, deps=d)
    assert [r[3] for r in trades(session)] == ["intent"]
    result = engine.tick(session, T, deps=deps(fake))
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED] * 3
    iwm = [o for o in fake.orders.values() if o["symbol"] == "IWM"]
    assert len(iwm) == 1
    assert rows_by_symbol(session)["IWM"][2] == iwm[0]["id"]


def test_a_manual_trade_while_the_batch_holds_the_account_waits_and_sees_the_batchs_orders(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    """HELD. While a's POST travels (the batch holds the account), a manual buy of IWM starts on
    another connection: it waits for the lock, then reads the account again and finds a's IWM
    working: refused (order_working), nothing sent by it."""
    books(session)
    fake.set_policy("manual")
    errors: list[BaseException] = []
    started = threading.Event()

    def manual() -> None:
        with connect(db_url) as other:
            d = deps(fake)
            d.clock = lambda: T
            try:
                manual_trade.manual_trade(other, ACCOUNT, "IWM", "buy", 1, deps=d)
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=manual)

    def on_submit(intent: OrderIntent, inner: Broker) -> Order:
        if intent.symbol == "IWM" and not started.is_set():
            started.set()
            thread.start()
            time.sleep(0.5)  # the manual trade is waiting on the account's lock by now
        return inner.submit(intent)

    result = engine.tick(session, T, deps=hooked(deps(fake), on_submit=on_submit))
    thread.join(20)
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED] * 3
    (err,) = errors
    assert isinstance(err, InputError | Busy), err
    assert [o["symbol"] for o in fake.orders.values()].count("IWM") == 1


# ---------------------------------------------------------------------------------------------
# 4. Reads sent ahead failing for one account among several.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["500-beyond-budget", "403", "timeout", "empty", "null"])
def test_reads_sent_ahead_failing_for_one_account_hurt_only_that_account(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """HELD. alpaca-a's first read (sent ahead) fails; the read again under the lock answers.
    a and b are processed, each account read at most twice, one order each."""
    first, second = fakes
    monkeypatch.setenv("ALPACA_RETRY_BUDGET_SECONDS", "0.5")
    monkeypatch.setenv("ALPACA_TIMEOUT_SECONDS", "0.3")
    get_settings.cache_clear()
    two_strategies(session, (None, "SECOND"))
    if how == "500-beyond-budget":
        first.fail("GET /v2/positions", 500, times=1000)
    elif how == "403":
        first.fail("GET /v2/positions", 403, times=1)
    elif how == "timeout":
        first.slow("GET /v2/positions", 1.0, times=1000)
    else:
        first.odd("GET /v2/positions", how, times=1000)  # type: ignore[arg-type]
    # the outage ends once the reads sent ahead have given up (a's lock is taken after them)
    heal = threading.Timer(1.2, first.heal)
    heal.start()
    d = replace(at(T), policy=TickPolicy(max_lag_seconds=90, broker_budget_seconds=0.5))
    try:
        result = engine.tick(session, T, deps=d)
    finally:
        heal.cancel()
    got = outcomes(result)
    assert got["b"] == (StrategyOutcome.PROCESSED, None)
    assert got["a"][0] in (StrategyOutcome.PROCESSED, StrategyOutcome.FAILED), got
    if got["a"][0] is StrategyOutcome.FAILED:
        assert result.retryable
        first.heal()
        again = engine.tick(session, T, deps=at(T))
        assert outcomes(again)["a"][0] is StrategyOutcome.PROCESSED
    assert [o["symbol"] for o in first.orders.values()] == ["IWM"]
    assert [o["symbol"] for o in second.orders.values()] == ["SPY"]


def test_a_second_row_reaching_the_same_alpaca_account_with_two_strategies_sends_nothing_for_it(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    """HELD. alpaca-a and alpaca-b on the same default keys, two strategies each (both batches,
    at once, reads sent ahead): the loser's two strategies fail with AccountConflict, nothing is
    sent or written for them."""
    first, second = fakes
    for name, acct, sym in (("a1", "alpaca-a", "IWM"), ("a2", "alpaca-a", "QQQ"),
                            ("b1", "alpaca-b", "SPY"), ("b2", "alpaca-b", "DIA")):  # fmt: skip
        seed(session, name=name, account=acct, broker="alpaca", config={"symbols": [sym]})
    entry_setup(session, ("IWM", "QQQ", "SPY", "DIA"), T)
    result = engine.tick(session, T, deps=at(T))
    got = outcomes(result)
    winners = {k[0] for k, v in got.items() if v[0] is StrategyOutcome.PROCESSED}
    assert len(winners) == 1, got
    loser = "b" if winners == {"a"} else "a"
    for k in (f"{loser}1", f"{loser}2"):
        assert got[k][0] is StrategyOutcome.FAILED and "AccountConflict" in (got[k][1] or ""), got
    sent = sorted(o["symbol"] for o in first.orders.values())
    assert sent == (["IWM", "QQQ"] if loser == "b" else ["DIA", "SPY"])
    assert second.orders == {}
    assert len(trades(session)) == 2


# ---------------------------------------------------------------------------------------------
# 5. Limits across the strategies of one batch.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a_answer", ["in-flight", "refused", "filled"])
def test_buying_power_and_open_positions_are_counted_across_the_batch(
    session: Session, a_answer: str
) -> None:
    """HELD. Cash for one share only (cash account): a's IWM buy is launched; b's SPY buy must be
    blocked on buying power whatever a's order becomes (working, refused by Alpaca, filled at
    once): the carried balance predates a's order. c (max_open_positions 1) must be
    blocked too: a's order counts as an open position."""
    with FakeAlpaca(cash=150, multiplier=1, fill="manual") as fake:
        books(session, limits={"c": Limits(max_open_positions=1)})

        def on_submit(intent: OrderIntent, inner: Broker) -> Order:
            if intent.symbol == "IWM" and a_answer == "refused":
                raise OrderRejected(40310000, "insufficient buying power")
            placed = inner.submit(intent)
            if intent.symbol == "IWM" and a_answer == "filled":
                fake.fill(intent.client_order_id)
            return placed

        result = engine.tick(session, T, deps=hooked(deps(fake), on_submit=on_submit))
        logged = dict(
            session.fetchall("select l.symbol, coalesce(l.risk_code, l.outcome::text) from strategy_logs l")
        )
        assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED] * 3
        assert logged["SPY"] == "buying_power", logged
        assert logged["QQQ"] in ("max_open_positions", "buying_power"), logged
        assert [o["symbol"] for o in fake.orders.values()] == ([] if a_answer == "refused" else ["IWM"])


# ---------------------------------------------------------------------------------------------
# 6. Fanout past MAX_ACCOUNTS_AT_ONCE.
# ---------------------------------------------------------------------------------------------


def test_twelve_alpaca_accounts_each_trade_their_own_and_no_connection_or_thread_is_left(
    session: Session, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """HELD. Twelve Alpaca accounts (more than MAX_ACCOUNTS_AT_ONCE and than the reads-ahead pool
    holds at once with the clock), two strategies each: every account trades its own Alpaca
    account, once per order; after the tick no engine thread and no extra connection is left."""
    with FakeAlpaca() as server:
        monkeypatch.setenv("ALPACA_BASE_URL", server.url)
        monkeypatch.setenv("ALPACA_TIMEOUT_SECONDS", "5")
        books_at: dict[str, FakeAlpaca] = {}
        for n in range(12):
            ref = f"ACCT{n}"
            key, secret = f"PKKEY{n:04d}", f"secret-{n:04d}"
            books_at[f"alpaca-{n}"] = server.add_account(key, secret, f"PA{n:08d}")
            monkeypatch.setenv(f"ALPACA_{ref}_API_KEY", key)
            monkeypatch.setenv(f"ALPACA_{ref}_SECRET_KEY", secret)
            for k, sym in enumerate(("IWM", "SPY")):
                seed(session, name=f"s{n:02d}{k}", account=f"alpaca-{n}", broker="alpaca",
                     config={"symbols": [sym]})  # fmt: skip
            session.execute(
                "update broker_accounts set credentials_ref = %s where name = %s", (ref, f"alpaca-{n}")
            )
        get_settings.cache_clear()
        entry_setup(session, ("IWM", "SPY"), T)
        before = {t.ident for t in threading.enumerate()}
        try:
            result = engine.tick(session, T, deps=at(T))
        finally:
            get_settings.cache_clear()
        assert {r.outcome for r in result.strategies} == {StrategyOutcome.PROCESSED}, outcomes(result)
        for name, book in books_at.items():
            assert sorted(o["symbol"] for o in book.orders.values()) == ["IWM", "SPY"], name
            assert book.requests["GET /v2/account"] == 1, name
        assert server.orders == {}
        assert len(trades(session)) == 24
        left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
                and not t.name.startswith(("fake-alpaca", "Thread-", "broker-io"))]  # fmt: skip
        assert left == []
        assert calls_under_way() == 0
        with connect(db_url) as probe:
            others = probe.fetchone(
                "select count(*) from pg_stat_activity where application_name like 'strategy-engine-%%'"
            )
        assert others == (0,)
