"""Strategies of several Alpaca accounts: one batch, one transaction, two connections (`fanout`).

Every Alpaca strategy of the invocation is staged in a savepoint of the one transaction, its
orders left travelling while the next is staged, whatever its account: the accounts' orders
are at the broker together. Accounts are locked in ascending id (as text), so two invocations
never wait on each other in a cycle; an account locked elsewhere is waited for once, and the
other accounts go on.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from strategy_engine import engine
from strategy_engine.brokers.base import Broker
from strategy_engine.core.models import BrokerAccount, Order, OrderIntent, StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import Session, connect
from strategy_engine.store import accounts as acct_store
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_alpaca_accounts import at, fakes, outcomes
from tests.test_alpaca_engine import trades
from tests.test_exactly_once import T, entry_setup

__all__ = ["fakes"]  # the fixture, used by name

# (strategy, account, symbol): names in an order other than their accounts' ids
BOOKS = (("a1", "alpaca-z", "IWM"), ("a2", "alpaca-z", "QQQ"), ("b1", "alpaca-y", "SPY"))


def books(s: Session) -> None:
    """b1 is seeded first, so its account (alpaca-y) has the smaller id; alpaca-y uses the SECOND
    key pair (the fakes' second Alpaca account), alpaca-z the default pair."""
    for name, account, symbol in sorted(BOOKS, key=lambda b: b[0] != "b1"):
        seed(s, name=name, account=account, broker="alpaca", config={"symbols": [symbol]})
    s.execute("update broker_accounts set credentials_ref = 'SECOND' where name = 'alpaca-y'")
    entry_setup(s, tuple(b[2] for b in BOOKS), T)


class _Hooked:
    """The real Alpaca broker, with `on_submit(intent)` run before each POST."""

    def __init__(self, inner: Broker, on_submit: Any) -> None:
        self._inner, self._on_submit = inner, on_submit

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def submit(self, intent: OrderIntent) -> Order:
        self._on_submit(intent)
        return self._inner.submit(intent)


def hooked(base: engine.Deps, on_submit: Any) -> engine.Deps:
    def make(account: BrokerAccount) -> Broker:
        return _Hooked(base.alpaca_broker(account), on_submit)  # type: ignore[return-value]

    return replace(base, alpaca_broker=make)


def test_every_accounts_orders_are_sent_before_any_answer_is_awaited_on_two_connections(
    session: Session, db_url: str, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    first, second = fakes
    books(session)
    database = session.fetchone("select current_database()")
    connections: list[int] = []
    # Each POST waits until all three orders are being sent: were an account's answers awaited
    # before the next account sent its own, the barrier would break.
    barrier = threading.Barrier(3, timeout=10)

    def on_submit(_intent: OrderIntent) -> None:
        if barrier.wait() != 0:
            return  # one observer, while all three orders are being sent
        with connect(db_url) as observer:  # the invocation's connections, the observer's left out
            row = observer.fetchone(
                "select count(*) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                database,
            )
        connections.append(int(row[0]) if row else -1)

    result = engine.tick(session, T, deps=hooked(at(T), on_submit))
    assert outcomes(result) == {name: (StrategyOutcome.PROCESSED, None) for name, _, _ in BOOKS}
    assert (len(first.orders), len(second.orders)) == (2, 1)
    assert sorted(r[0] for r in trades(session)) == ["IWM", "QQQ", "SPY"]
    # the minute's connection and the intents': not two more per account
    assert connections == [2]


def test_accounts_are_locked_in_ascending_id_order_whatever_the_strategy_names(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca], monkeypatch: pytest.MonkeyPatch
) -> None:
    books(session)
    ids = dict(session.fetchall("select name, id from broker_accounts"))
    low, high = sorted(ids, key=lambda name: str(ids[name]))
    for account, prefix in ((high, "a-"), (low, "b-")):  # the names put the higher id's first
        session.execute(
            "update strategy_definitions set name = %s || name"
            " where account_id = (select id from broker_accounts where name = %s)",
            (prefix, account),
        )
    locked: list[object] = []
    lock = acct_store.lock_account_later

    def spy(s: Session, account_id: Any, *args: Any) -> Any:
        locked.append(account_id)
        return lock(s, account_id, *args)

    monkeypatch.setattr(acct_store, "lock_account_later", spy)
    result = engine.tick(session, T, deps=at(T))
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED] * 3
    assert result.strategies[0].strategy.startswith("a-")  # reported in name order: `high` first
    assert locked[0] == ids[low]  # but locked from the lower id on
    assert sorted(locked, key=str) == locked and len(locked) == 3


def test_an_account_locked_elsewhere_is_waited_for_once_and_the_other_accounts_go_on(
    session: Session, db_url: str, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    first, second = fakes
    books(session)
    d = replace(at(T), policy=TickPolicy(max_lag_seconds=90, lock_timeout_seconds=0.2))
    with connect(db_url) as other, other.transaction():
        other.execute("select 1 from broker_accounts where name = 'alpaca-z' for update")
        result = engine.tick(session, T, deps=d)
    got = outcomes(result)
    assert got["b1"] == (StrategyOutcome.PROCESSED, None)
    assert got["a1"][0] is StrategyOutcome.BUSY and "lock" in (got["a1"][1] or "")  # waited once
    assert got["a2"] == (StrategyOutcome.BUSY, "account locked")  # not again
    assert result.retryable  # whoever held the lock may have skipped them: the scheduler retries
    assert (len(first.orders), len(second.orders)) == (0, 1)
    again = engine.tick(session, T, deps=at(T))
    assert {k: v[0] for k, v in outcomes(again).items()} == {
        "a1": StrategyOutcome.PROCESSED,
        "a2": StrategyOutcome.PROCESSED,
        "b1": StrategyOutcome.ALREADY_PROCESSED,
    }
    assert (len(first.orders), len(second.orders)) == (2, 1)
