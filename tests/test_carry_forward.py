"""An Alpaca account read once per invocation (sent ahead as it starts) and carried forward
(account_view.py), read again when another transaction mirrored the account in between; orders
of one strategy posted at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from strategy_engine import engine
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.store import Session, connect
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT, deps, trades
from tests.test_exactly_once import T, entry_setup

FIRST, SECOND = ("IWM", "QQQ"), ("SPY", "DIA")
READS = ("GET /v2/account", "GET /v2/positions")


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as server:
        yield server


def two_on_one_account(s: Session) -> None:
    """Strategies a and b on the one Alpaca account, each entering long on its two symbols at T."""
    for name, symbols in (("a", FIRST), ("b", SECOND)):
        seed(s, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(s, FIRST + SECOND, T)


def _once_the_run_started(db_url: str, action: Callable[[Session], None]) -> Callable[[], datetime]:
    """A clock that runs `action` on its own connection the first time it is asked once the
    invocation's engine_runs row exists: after the accounts' reads were sent ahead (and their
    stamps read), before any strategy takes the account's lock."""
    done = False

    def clock() -> datetime:
        nonlocal done
        if not done:
            with connect(db_url) as other:
                row = other.fetchone("select count(*) from engine_runs where status = 'running'")
                if row is not None and row[0]:
                    done = True
                    action(other)
        return datetime.now(T.tzinfo)

    return clock


def test_the_account_is_read_once_and_the_second_strategy_sees_the_firsts_orders_working(
    session: Session, fake: FakeAlpaca
) -> None:
    two_on_one_account(session)
    fake.set_policy("manual")  # accepted, never filled: the first strategy's orders stay working
    result = engine.tick(session, T, deps=deps(fake))
    assert [(r.strategy, r.outcome, r.orders) for r in result.strategies] == [
        ("a", StrategyOutcome.PROCESSED, 2),
        ("b", StrategyOutcome.PROCESSED, 2),
    ]
    assert [fake.requests[r] for r in READS] == [1, 1]
    assert fake.requests["POST /v2/orders"] == 4
    assert fake.requests["GET /v2/orders:by_client_order_id"] == 0
    # one journal row per order, none of them looked up one by one
    assert sorted(r[0] for r in trades(session)) == sorted(FIRST + SECOND)


def test_another_transaction_mirroring_the_account_after_the_reads_went_ahead_makes_them_read_again(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    two_on_one_account(session)
    engine.tick(session, T - timedelta(minutes=1), deps=deps(fake))  # the balance row exists
    fake.requests.clear()
    fake.set_policy("manual")

    def manual_trade_committed(other: Session) -> None:  # what any transaction that posts does
        other.execute("update broker_balances set updated_at = clock_timestamp()")

    d = deps(fake)
    d.clock = _once_the_run_started(db_url, manual_trade_committed)
    result = engine.tick(session, T, deps=d)
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED] * 2
    # the reads sent ahead, then read again under the lock: the stamp had moved in between
    assert [fake.requests[r] for r in READS] == [2, 2]


def test_a_balance_row_left_as_this_invocation_wrote_it_is_not_read_again(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    # The same probe as above, doing nothing: the second read above is the stamp's doing.
    two_on_one_account(session)
    engine.tick(session, T - timedelta(minutes=1), deps=deps(fake))
    fake.requests.clear()
    fake.set_policy("manual")
    d = deps(fake)
    d.clock = _once_the_run_started(db_url, lambda _other: None)
    engine.tick(session, T, deps=d)
    assert [fake.requests[r] for r in READS] == [1, 1]
