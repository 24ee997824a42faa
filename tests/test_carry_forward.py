"""An Alpaca account read once per invocation (sent ahead as it starts) and carried forward
(account_view.py), read again when another transaction mirrored the account in between; orders
of one strategy posted at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from strategy_engine import engine
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.store import Session, connect
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT, deps, trades
from tests.test_exactly_once import T, entry_setup

FIRST, SECOND = ("IWM", "QQQ"), ("SPY", "DIA")
READS = ("GET /v2/account", "GET /v2/positions")


def two_on_one_account(s: Session) -> None:
    """Strategies a and b on the one Alpaca account, each entering long on its two symbols at T."""
    for name, symbols in (("a", FIRST), ("b", SECOND)):
        seed(s, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(s, FIRST + SECOND, T)


def _count_mirror_writes(s: Session) -> Callable[[], int]:
    """A trigger noting every write of the balance row (a mirror write: `save_mirror`), whoever
    makes it; the answer is how many there were since."""
    s.execute("create table mirror_writes (n int)")
    s.execute(
        "create function note_mirror_write() returns trigger language plpgsql as"
        " $$ begin insert into mirror_writes values (1); return null; end $$"
    )
    s.execute(
        "create trigger noted after insert or update on broker_balances"
        " for each row execute function note_mirror_write()"
    )

    def count() -> int:
        row = s.fetchone("select count(*) from mirror_writes")
        assert row is not None
        return int(row[0])

    return count


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
    mirror_writes = _count_mirror_writes(session)
    fake.set_policy("manual")  # accepted, never filled: the first strategy's orders stay working
    result = engine.tick(session, T, deps=deps(fake))
    assert [(r.strategy, r.outcome, r.orders) for r in result.strategies] == [
        ("a", StrategyOutcome.PROCESSED, 2),
        ("b", StrategyOutcome.PROCESSED, 2),
    ]
    assert [fake.requests[r] for r in READS] == [1, 1]
    assert mirror_writes() == 1  # once per transaction: the batch's one COMMIT shows it
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


@dataclass
class _FirstFailsOnceOpen(engine.Deps):
    """The first strategy's minute fails once it has opened the account (as when its
    reconciliation's lookup or its deadline fails it there): its savepoint rolls back, the mirror
    write with it."""

    failed: bool = False

    def open_account(self, *args: Any, **kwargs: Any) -> Any:
        view = super().open_account(*args, **kwargs)
        if not self.failed:
            self.failed = True
            raise RuntimeError("failed after opening the account")
        return view


def test_a_strategy_that_failed_after_opening_the_account_leaves_the_next_to_read_and_mirror_it(
    session: Session, fake: FakeAlpaca
) -> None:
    two_on_one_account(session)
    fake.set_policy("manual")  # nothing ever fills: the broker's cash is the one set below
    engine.tick(session, T - timedelta(minutes=1), deps=deps(fake))  # the balance row exists
    before = session.fetchone("select cash::float8, updated_at from broker_balances")
    assert before is not None and before[0] != 54321.5
    fake.requests.clear()
    fake.cash = Decimal("54321.5")  # what the broker holds from now on
    base = deps(fake)
    d = _FirstFailsOnceOpen(**{f.name: getattr(base, f.name) for f in fields(engine.Deps)})
    result = engine.tick(session, T, deps=d)
    assert [(r.strategy, r.outcome) for r in result.strategies] == [
        ("a", StrategyOutcome.FAILED),
        ("b", StrategyOutcome.PROCESSED),
    ]
    # a's mirror write rolled back: the stamp under the lock is the one before the tick, not the
    # one a wrote, so b reads the account again (the reads sent ahead, then b's)...
    assert [fake.requests[r] for r in READS] == [2, 2]
    # ...and writes the mirror itself: its COMMIT moves the stamp other invocations compare with.
    after = session.fetchone("select cash::float8, updated_at from broker_balances")
    assert after is not None
    assert after[0] == 54321.5 and after[1] > before[1]
