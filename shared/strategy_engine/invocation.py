"""One invocation's time rules: the minute's lag and lead, the broker's clock, one deadline.

The engine asks here, before it starts a strategy's transaction, whether that strategy may run:
- a minute ahead of the host's clock by at most `CLOCK_SKEW` (scheduler lead, skew) is waited
  for; further ahead it is refused (a decision before the minute's bars exist);
- on an account whose broker is real (Alpaca), a minute older than `max_lag_seconds` is `late`:
  a redelivered or replayed request must not place a market order now on a decision from then
  (simulated accounts replay any minute: that is how history goes through the tick);
- the broker's own clock is asked once per invocation; closed is `market_closed` for its
  accounts, and a disagreement with the installed calendar is logged;
- past the invocation's one deadline (`deadline_seconds` from its start, inside the platform's
  timeout) no strategy starts and nothing new is sent: those strategies answer `deadline`.
Times come from an injected clock, so tests never sleep for real.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from strategy_engine.brokers.base import Broker
from strategy_engine.core.errors import EngineError, InputError
from strategy_engine.core.models import BrokerAccount, StrategyOutcome, StrategyRun
from strategy_engine.logs import event

# A minute at most this far ahead of the host clock is waited for; further ahead it is refused.
# A forced Cloud Scheduler run can carry the *next* scheduled time; EventBridge may fire early.
CLOCK_SKEW = timedelta(seconds=5)
# Slack added to (deadline + broker budget) before an intent with no answer is presumed dead:
# network latency of the last attempt and clock differences between the host and the database.
IN_FLIGHT_MARGIN_SECONDS = 10.0
REAL_BROKERS = frozenset({"alpaca"})


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TickPolicy:
    """The invocation's limits, in seconds (see settings.py for what each means)."""

    max_lag_seconds: float = 90.0
    deadline_seconds: float = 45.0
    lock_timeout_seconds: float = 5.0
    idle_timeout_seconds: float = 60.0
    broker_budget_seconds: float = 20.0  # one broker call's retry budget (ALPACA_RETRY_BUDGET_SECONDS)

    @property
    def in_flight_seconds(self) -> float:
        """How long after its intent was committed an order may still be POSTed by a live worker
        (one that froze between the commit and the POST): every attempt starts before the
        deadline (a wall-clock check) and ends within the broker's budget. An intent younger
        than this that the broker does not hold is working, not void."""
        return self.deadline_seconds + self.broker_budget_seconds + IN_FLIGHT_MARGIN_SECONDS

    @classmethod
    def from_settings(cls) -> TickPolicy:
        from strategy_engine.settings import get_settings

        st = get_settings()
        return cls(
            st.max_tick_lag_seconds,
            st.tick_deadline_seconds,
            st.db_lock_timeout_seconds,
            st.db_idle_timeout_seconds,
            st.alpaca_retry_budget_seconds,
        )


def lead(minute: datetime, now: datetime) -> timedelta:
    """How far the decision minute is ahead of the host clock (negative: behind)."""
    return minute - now


@dataclass
class Invocation:
    """One call of the tick: its minute, its start and deadline, the broker clocks it asked."""

    minute: datetime
    policy: TickPolicy
    clock: Callable[[], datetime] = wall_clock
    sleep: Callable[[float], None] = time.sleep
    started: datetime = field(init=False)
    send_by: datetime = field(init=False)  # the deadline on the real wall clock, for the broker
    _broker_open: dict[str, bool] = field(default_factory=dict, init=False)
    _clock_ahead: dict[str, Future[tuple[datetime, bool]]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()
        # The injected clock may be a test's or a replay's; a POST is held to the real one.
        self.send_by = wall_clock() + timedelta(seconds=self.policy.deadline_seconds)

    @property
    def deadline(self) -> datetime:
        return self.started + timedelta(seconds=self.policy.deadline_seconds)

    def past_deadline(self) -> bool:
        return self.clock() >= self.deadline

    def wait_for_minute(self) -> str | None:
        """Sleep until a minute slightly ahead of the host clock; the refusal's reason if too far."""
        ahead = lead(self.minute, self.clock())
        if ahead > CLOCK_SKEW:
            return f"minute {self.minute.isoformat()} is {ahead.total_seconds():.1f}s ahead of the host clock"
        if ahead > timedelta(0):
            event("waiting for the minute", minute=self.minute.isoformat(), seconds=ahead.total_seconds())
            self.sleep(ahead.total_seconds())
        return None

    def late_by(self) -> float | None:
        """Seconds past the lag limit when the minute is too old for a real broker, else None."""
        if self.policy.max_lag_seconds <= 0:
            return None
        age = (self.started - self.minute).total_seconds()
        return age if age > self.policy.max_lag_seconds else None

    def gate(self, account: BrokerAccount) -> tuple[StrategyOutcome, str] | None:
        """Why a strategy on `account` must not start now (outcome, detail), or None to go on.
        The broker's clock is asked later, before anything is sent (`check_broker_open`)."""
        if self.past_deadline():
            return (
                StrategyOutcome.DEADLINE,
                f"past the invocation's {self.policy.deadline_seconds:g}s deadline",
            )
        if account.broker not in REAL_BROKERS:
            return None
        age = self.late_by()
        if age is not None:
            limit = self.policy.max_lag_seconds
            return StrategyOutcome.LATE, f"minute is {age:.0f}s old (MAX_TICK_LAG_SECONDS={limit:g})"
        return None

    def check_broker_open(self, account: BrokerAccount, broker: Callable[[BrokerAccount], Broker]) -> None:
        """Before a strategy on a real broker sends anything: raises `BrokerClosed` when the
        broker's clock (asked once per invocation and broker, `ask_clock`) says the market is
        closed, `Unavailable` when it cannot be read (the strategy fails and the minute is
        retried, like any broker outage). Either way the strategy's minute is rolled back."""
        if account.broker in REAL_BROKERS and not self._is_open(account, broker):
            raise BrokerClosed("the broker's clock says the market is closed")

    def ask_clock(
        self, account: BrokerAccount, broker: Callable[[BrokerAccount], Broker], pool: ThreadPoolExecutor
    ) -> None:
        """Send the request for `account`'s broker clock now, on `pool`, unless already asked; the
        strategies of that broker wait for the answer (`check_broker_open`); if it failed, each
        asks again with its own account."""
        if account.broker in REAL_BROKERS and account.broker not in self._clock_ahead:
            self._clock_ahead[account.broker] = pool.submit(lambda: broker(account).clock())

    def _is_open(self, account: BrokerAccount, broker: Callable[[BrokerAccount], Broker]) -> bool:
        name = account.broker  # one clock per broker: every account of it shares the market's hours
        if name not in self._broker_open:
            ahead = self._clock_ahead.get(name)  # shared by the accounts' threads: asked once
            try:
                stamp, is_open = ahead.result() if ahead is not None else broker(account).clock()
            except Exception:  # the clock asked ahead (with another account's keys) failed
                if ahead is None:
                    raise
                stamp, is_open = broker(account).clock()  # ask with this account's own
            self._broker_open[name] = is_open
            if not is_open:  # the engine asks only when the calendar says open
                event(
                    "broker clock disagrees with the calendar",
                    level=logging.WARNING,
                    broker=name,
                    minute=self.minute.isoformat(),
                    broker_time=stamp.isoformat(),
                    broker_open=is_open,
                    calendar_open=True,
                )
        return self._broker_open[name]


class MinuteRefused(InputError):
    """The minute is too far ahead of the host clock to be waited for; the refusal is recorded."""


class NotRun(EngineError):
    """A strategy's minute stopped before it sent anything, by a rule of the invocation: rolled
    back, its outcome `outcome`."""

    outcome = StrategyOutcome.FAILED


class DeadlinePassed(NotRun):
    """The invocation's deadline passed before this strategy sent anything: rolled back, `deadline`."""

    outcome = StrategyOutcome.DEADLINE


class BrokerClosed(NotRun):
    """The broker's clock says the market is closed (the calendar said open): `market_closed`."""

    outcome = StrategyOutcome.MARKET_CLOSED


def run_status(runs: Sequence[StrategyRun]) -> str:
    """The engine_runs status of an invocation from its strategies' outcomes.

    `failed` (an outage: the scheduler retries) before `deadline` (retried too: what was not
    sent may still be in time), then `late` or `market_closed` when every strategy was so.
    """
    outcomes = {r.outcome for r in runs}
    if StrategyOutcome.FAILED in outcomes:
        return "failed"
    if StrategyOutcome.DEADLINE in outcomes:
        return "deadline"
    for only in (StrategyOutcome.LATE, StrategyOutcome.MARKET_CLOSED):
        if outcomes == {only}:
            return only.value
    return "ok"
