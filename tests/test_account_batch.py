"""Several strategies on one Alpaca account: one transaction, a savepoint each (engine._run_account).

Every strategy is decided and its orders sent before any answer is awaited, so the account's
orders travel together; a strategy's failure rolls back its own savepoint only; a lock held
elsewhere makes the account busy once, not once per strategy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from strategy_engine import engine, execution
from strategy_engine.brokers.base import Broker
from strategy_engine.core.errors import BrokerUnavailable, LiveTradingRefused
from strategy_engine.core.models import Account, BrokerAccount, Order, OrderIntent, Position, StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import Session, connect, journal
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT, deps, trades
from tests.test_exactly_once import T, entry_setup

BOOKS = {"a": ("IWM", "QQQ"), "b": ("SPY", "DIA"), "c": ("XLF", "XLE")}


def three_on_one_account(s: Session) -> None:
    for name, symbols in BOOKS.items():
        seed(s, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(s, tuple(sym for syms in BOOKS.values() for sym in syms), T)


def last_runs(s: Session) -> list[tuple[Any, ...]]:
    """(strategy, last_run_minute) of every day row, by name."""
    return s.fetchall(
        "select d.name, st.last_run_minute from strategy_state st"
        " join strategy_definitions d on d.id = st.strategy_id order by d.name"
    )


def logged(s: Session) -> list[tuple[Any, ...]]:
    """The strategies with a decision in strategy_logs, by name."""
    return s.fetchall(
        "select distinct d.name from strategy_logs l join strategy_definitions d on d.id = l.strategy_id"
        " order by d.name"
    )


class _Wrapped:
    """The real Alpaca broker, with `on_submit(intent)` run before each POST."""

    def __init__(self, inner: Broker, on_submit: object) -> None:
        self._inner, self._on_submit = inner, on_submit

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def submit(self, intent: OrderIntent) -> Order:
        self._on_submit(intent)  # type: ignore[operator]
        return self._inner.submit(intent)


def _wrapping(base: engine.Deps, on_submit: object) -> engine.Deps:
    def make(account: BrokerAccount) -> Broker:
        return _Wrapped(base.alpaca_broker(account), on_submit)  # type: ignore[return-value]

    return replace(base, alpaca_broker=make)


@pytest.mark.parametrize("strategies", [2, 3])
def test_every_strategy_of_the_account_sends_before_any_answer_is_awaited(
    session: Session, fake: FakeAlpaca, strategies: int
) -> None:
    books = dict(list(BOOKS.items())[:strategies])
    for name, symbols in books.items():
        seed(session, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(session, tuple(sym for syms in books.values() for sym in syms), T)
    # Each POST waits until every order is being sent: were a strategy's answers awaited before
    # the next strategy sent its own, the first ones would wait forever (broken barrier).
    barrier = threading.Barrier(2 * strategies, timeout=10)
    result = engine.tick(session, T, deps=_wrapping(deps(fake), lambda _intent: barrier.wait()))
    assert [(r.strategy, r.outcome, r.orders) for r in result.strategies] == [
        (name, StrategyOutcome.PROCESSED, 2) for name in books
    ]
    assert fake.requests["POST /v2/orders"] == 2 * strategies
    assert sorted(r[0] for r in trades(session)) == sorted(sym for syms in books.values() for sym in syms)
    assert last_runs(session) == [(name, T) for name in books]
    assert session.fetchall("select distinct engine_run_id from strategy_logs") == [(result.run_id,)]


def test_strategies_sharing_a_simulated_account_commit_one_by_one(session: Session, db_url: str) -> None:
    # A simulated account's strategies keep a transaction each: when b's minute opens the
    # account, a's minute is already committed (seen from another connection).
    for name, symbols in list(BOOKS.items())[:2]:
        seed(session, name=name, account="sim-shared", config={"symbols": list(symbols)})
    entry_setup(session, BOOKS["a"] + BOOKS["b"], T)
    seen: list[object] = []
    base = engine.Deps(policy=TickPolicy(max_lag_seconds=0))

    def build(acct: Account, pos: list[Position], minute: datetime, slip: float) -> Broker:
        with connect(db_url) as other:
            seen.append(other.fetchall(
                "select d.name, st.last_run_minute from strategy_state st"
                " join strategy_definitions d on d.id = st.strategy_id order by d.name"
            ))  # fmt: skip
        return base.simulated_broker(acct, pos, minute, slip)

    result = engine.tick(session, T, deps=replace(base, simulated_broker=build))
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED] * 2
    assert seen == [[("a", None), ("b", None)], [("a", T), ("b", None)]]
    # every decision row names the run that wrote it
    assert session.fetchall("select distinct engine_run_id from strategy_logs") == [(result.run_id,)]


def test_a_strategy_whose_send_fails_is_rolled_back_alone_and_the_others_commit(
    session: Session, fake: FakeAlpaca
) -> None:
    three_on_one_account(session)

    def outage_for_b(intent: OrderIntent) -> None:
        if intent.symbol in BOOKS["b"]:
            raise BrokerUnavailable("Alpaca POST /v2/orders still failing after 1.0s: connection reset")

    result = engine.tick(session, T, deps=_wrapping(deps(fake), outage_for_b))
    outcomes = {r.strategy: r.outcome for r in result.strategies}
    assert outcomes == {
        "a": StrategyOutcome.PROCESSED,
        "b": StrategyOutcome.FAILED,
        "c": StrategyOutcome.PROCESSED,
    }
    failed = next(r for r in result.strategies if r.strategy == "b")
    assert failed.retryable and failed.error is not None and "connection reset" in failed.error
    # a and c: their minute written; b: nothing of its minute but the intents it tried to send
    assert last_runs(session) == [("a", T), ("b", None), ("c", T)]
    assert logged(session) == [("a",), ("c",)]
    assert sorted((r[0], r[3]) for r in trades(session) if r[0] in BOOKS["b"]) == [
        ("DIA", "intent"),
        ("SPY", "intent"),
    ]
    assert fake.requests["POST /v2/orders"] == 4  # b's orders never reached the broker
    # the retry of the minute runs b alone (a and c are done), and sends its orders once
    again = engine.tick(session, T, deps=deps(fake))
    assert {r.strategy: r.outcome for r in again.strategies} == {
        "a": StrategyOutcome.ALREADY_PROCESSED,
        "b": StrategyOutcome.PROCESSED,
        "c": StrategyOutcome.ALREADY_PROCESSED,
    }
    assert fake.requests["POST /v2/orders"] == 6


def test_an_account_locked_elsewhere_is_busy_once_not_once_per_strategy(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    three_on_one_account(session)
    d = replace(deps(fake), policy=TickPolicy(max_lag_seconds=0, lock_timeout_seconds=0.2))
    with connect(db_url) as other, other.transaction():
        other.execute("select 1 from broker_accounts where name = %s for update", (ACCOUNT,))
        result = engine.tick(session, T, deps=d)
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.BUSY] * 3
    first, *rest = result.strategies
    assert first.error is not None and "lock" in first.error  # it waited its lock_timeout
    assert [r.error for r in rest] == ["account locked"] * 2  # the others did not wait again
    # What the run's row keeps (and the HTTP body says): each strategy by name, every one of
    # them retryable, since none of their minutes was claimed (docs/operations.md, `busy`).
    row = session.fetchone("select detail from engine_runs where id = %s", (result.run_id,))
    assert row is not None
    assert [(x["strategy"], x["outcome"], x["retryable"]) for x in row[0]] == [
        (name, "busy", True) for name in BOOKS
    ]
    assert fake.requests["POST /v2/orders"] == 0
    assert session.fetchone("select count(*) from strategy_logs") == (0,)


@pytest.mark.parametrize("where", ["staging", "recording"])
def test_a_database_error_in_one_strategys_minute_rolls_back_its_savepoint_alone(
    session: Session,
    fake: FakeAlpaca,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    three_on_one_account(session)
    row = session.fetchone("select id from strategy_definitions where name = 'b'")
    assert row is not None
    b_id = row[0]

    def error(s: Session) -> None:
        s.execute("select 1 / 0")  # a real error from the server: the (sub)transaction is aborted

    if where == "staging":  # after b's claim, lock, mirror and reconciliation were written
        exposure = execution.working_exposure

        def failing_exposure(s: Session, view: Any, features: Any, *rest: Any) -> Any:
            if set(features) == set(BOOKS["b"]):
                error(s)
            return exposure(s, view, features, *rest)

        monkeypatch.setattr(execution, "working_exposure", failing_exposure)
    else:  # after b's decisions were written, before its orders and day state
        record = journal.record_orders

        def failing_record(s: Session, strategy_id: Any, *rest: Any) -> Any:
            if strategy_id == b_id:
                error(s)
            return record(s, strategy_id, *rest)

        monkeypatch.setattr(journal, "record_orders", failing_record)
    result = engine.tick(session, T, deps=deps(fake))
    outcomes = {r.strategy: r.outcome for r in result.strategies}
    assert outcomes == {
        "a": StrategyOutcome.PROCESSED,
        "b": StrategyOutcome.FAILED,
        "c": StrategyOutcome.PROCESSED,
    }
    assert last_runs(session) == [("a", T), ("b", None), ("c", T)]
    assert logged(session) == [("a",), ("c",)]
    failed = [r.fields for r in caplog.records if r.getMessage() == "strategy failed"]  # type: ignore[attr-defined]
    assert [(f["strategy"], f["run_id"], f["minute"]) for f in failed] == [
        ("b", str(result.run_id), T.isoformat())
    ]


def test_a_live_endpoint_refuses_the_whole_tick_from_inside_a_batch(
    session: Session, fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    three_on_one_account(session)

    def live(_account: BrokerAccount) -> Broker:
        raise LiveTradingRefused("ALPACA_BASE_URL is not Alpaca's paper endpoint: refused")

    with pytest.raises(LiveTradingRefused):
        engine.tick(session, T, trigger="scheduler", deps=replace(deps(fake), alpaca_broker=live))
    assert fake.requests == {}
    assert session.fetchone("select count(*) from strategy_logs") == (0,)
    assert session.fetchone("select status, trigger from engine_runs") == ("failed", "scheduler")
    # the run's `tick` line, the one the alerts read, says so at ERROR, naming its trigger
    ticks = [r for r in caplog.records if r.getMessage() == "tick"]
    assert [(r.levelno, r.fields["outcome"], r.fields["trigger"]) for r in ticks] == [  # type: ignore[attr-defined]
        (logging.ERROR, "failed", "scheduler")
    ]


def test_a_refusal_raised_after_an_earlier_strategy_sent_waits_for_its_orders_before_the_tick_ends(
    session: Session, fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a's orders are travelling (each POST held 0.3 s) when b's staging raises a refusal of the
    whole tick: it escapes the batch before a's answers are recorded, and the account's group
    awaits them on the way out (`fanout`): no POST of this tick is still under way after it."""
    three_on_one_account(session)
    exposure = execution.working_exposure

    def refusing_exposure(s: Session, view: Any, features: Any, *rest: Any) -> Any:
        if set(features) == set(BOOKS["b"]):
            raise LiveTradingRefused("ALPACA_BASE_URL is not Alpaca's paper endpoint: refused")
        return exposure(s, view, features, *rest)

    monkeypatch.setattr(execution, "working_exposure", refusing_exposure)
    slow = _wrapping(deps(fake), lambda _intent: time.sleep(0.3))
    with pytest.raises(LiveTradingRefused):
        engine.tick(session, T, deps=slow)
    assert fake.requests["POST /v2/orders"] == len(BOOKS["a"])  # a's, each answered before the raise


def test_a_failed_request_sent_ahead_is_asked_again_not_taken_as_the_answer(
    session: Session, fake: FakeAlpaca
) -> None:
    three_on_one_account(session)
    fake.fail("GET /v2/account", 403, times=1)  # the read sent ahead: refused once
    fake.fail("GET /v2/clock", 403, times=1)  # the clock sent ahead: refused once
    result = engine.tick(session, T, deps=deps(fake))
    assert [(r.strategy, r.outcome) for r in result.strategies] == [
        (name, StrategyOutcome.PROCESSED) for name in BOOKS
    ]
    assert fake.requests["GET /v2/account"] == 2  # ahead (refused), then once under the lock
    assert fake.requests["GET /v2/clock"] == 2
    assert fake.requests["POST /v2/orders"] == 6


def test_an_outage_failing_one_strategy_of_the_batch_does_not_make_the_rest_busy(
    session: Session, fake: FakeAlpaca
) -> None:
    three_on_one_account(session)
    fake.fail("GET /v2/account", 403, times=2)  # the read sent ahead, then a's read under the lock
    result = engine.tick(session, T, deps=deps(fake))
    a, b, c = result.strategies
    assert (a.outcome, a.retryable) == (StrategyOutcome.FAILED, True)  # an outage: retried
    assert [(r.strategy, r.outcome) for r in (b, c)] == [
        ("b", StrategyOutcome.PROCESSED),
        ("c", StrategyOutcome.PROCESSED),
    ]
    assert fake.requests["GET /v2/account"] == 3  # b read it again; c used b's read
