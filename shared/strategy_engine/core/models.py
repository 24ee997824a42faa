"""Domain values shared by the pure core and the shell.

Every value is frozen: the tick and the backfill pass the same values through the same pure
functions, and nothing downstream can change what a decision was based on. Times are UTC;
flow sums are integer cents, exact in any order (SQL in the tick, numpy in the backfill).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

# The id of a row in broker_accounts or strategy_definitions: those tables may predate the
# engine, so their key is whatever it was (uuid, bigint or integer) and the engine only carries it.
RowId = UUID | int


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class Action(StrEnum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class Outcome(StrEnum):
    HELD = "held"
    BLOCKED = "blocked"
    ORDERED = "ordered"
    FAILED = "failed"
    RECONCILED = "reconciled"  # an order found at the broker for an intent its minute never recorded


class StrategyOutcome(StrEnum):
    """What happened to one (strategy, minute) in one invocation."""

    PROCESSED = "processed"
    BUSY = "busy"
    ALREADY_PROCESSED = "already_processed"
    FAILED = "failed"
    LATE = "late"  # the minute is too old to send to a real broker: nothing sent
    MARKET_CLOSED = "market_closed"  # the broker's clock says closed: nothing sent
    DEADLINE = "deadline"  # the deadline passed before it started (nothing sent) or before some orders went


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    ts: datetime  # UTC, the bar's start
    open: float
    high: float
    low: float
    close: float
    volume: int


@dataclass(frozen=True, slots=True)
class FlowEvent:
    ts: datetime
    underlying: str
    option_type: str  # 'call' | 'put'
    side: str  # 'buy' | 'sell' | 'unknown'
    size: int | None
    trade_price: float | None
    notional: float | None


@dataclass(frozen=True, slots=True)
class Features:
    """What a strategy sees of one symbol at decision minute T (bars ts < T, flow in lookback)."""

    symbol: str
    bars: int  # how many bars the window holds (capped at the window the strategy asked for)
    close: float | None  # the last bar's close
    sma: float | None  # mean of the last `window` closes; None when fewer bars exist
    last_bar_ts: datetime | None
    bull_cents: int  # bullish flow premium in the lookback, integer cents
    bear_cents: int
    ignored_bars: int = 0  # bad bars left out of the window (core.data_quality)
    ignored_flow: int = 0  # flow events of the lookback left out
    # A break (core.data_quality) cut the window short: the bars before it do not count.
    series_break: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    symbol: str
    action: Action
    qty: float
    reason: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: Side
    qty: float
    price: float  # the decision price (last close), used for notional and simulated fills
    client_order_id: str
    # Wall-clock time (UTC) after which no attempt to place it may start: the sender sets it from
    # the invocation's deadline, so a worker that froze before its POST never sends it late.
    send_by: datetime | None = None


#: Statuses after which an order never changes again; any other is refreshed every tick.
FINAL_ORDER_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
#: Final statuses in which nothing was (or will be) bought or sold unless part of it filled.
DEAD_ORDER_STATUSES = frozenset({"canceled", "expired", "rejected"})


@dataclass(frozen=True, slots=True)
class Order:
    """The broker's view of an order, in our own types (money as float, never strings)."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    qty: float
    status: str
    filled_qty: float
    filled_avg_price: float | None
    submitted_at: datetime | None = None

    @property
    def working_qty(self) -> float:
        """Signed shares still to fill (buy +, sell -); 0 once the order is final."""
        if self.status in FINAL_ORDER_STATUSES:
            return 0.0
        rest = max(self.qty - self.filled_qty, 0.0)
        return rest if self.side is Side.BUY else -rest

    @property
    def died_unfilled(self) -> bool:
        """Rejected, canceled or expired with nothing filled: it never traded."""
        return self.status in DEAD_ORDER_STATUSES and self.filled_qty == 0


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    qty: float
    avg_entry_price: float


@dataclass(frozen=True, slots=True)
class Account:
    cash: float
    buying_power: float
    equity: float
    #: The broker's own id of the account (Alpaca's account_number); None for the simulated one.
    account_number: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """A None limit means no limit for that check."""

    max_daily_trades: int | None = None
    max_position_size: float | None = None
    max_notional_per_trade: float | None = None
    max_notional_per_day: float | None = None
    max_open_positions: int | None = None
    cool_down_minutes: float | None = None


@dataclass(frozen=True, slots=True)
class DayState:
    """Counters of one strategy's trading date; "today" is the New York date of T."""

    trading_date: date
    trades_today: int = 0
    notional_today: float = 0.0


@dataclass(frozen=True, slots=True)
class Check:
    code: str
    observed: float | str | None
    limit: float | str | None
    passed: bool

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "observed": self.observed, "limit": self.limit, "passed": self.passed}


@dataclass(frozen=True, slots=True)
class Verdict:
    approved: bool
    code: str | None  # the first failing check's code
    checks: tuple[Check, ...]
    reduce_only: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """One symbol's decision at T: the signal, the risk verdict (orders only), and the outcome."""

    minute: datetime
    signal: Signal
    intent: OrderIntent | None
    verdict: Verdict | None
    outcome: Outcome
    order: Order | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StrategyDef:
    """A strategy_definitions row; its account is `StrategyRow.account` (joined), not an id here."""

    id: RowId
    name: str
    strategy_type: str
    is_active: bool
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    id: RowId
    name: str
    broker: str  # 'alpaca' | 'simulated'
    #: Which Alpaca key pair the row trades with (a setting name, never a key); None: the default.
    credentials_ref: str | None = None


@dataclass(frozen=True, slots=True)
class StrategyRun:
    strategy: str
    outcome: StrategyOutcome
    decisions: int = 0
    orders: int = 0
    blocked: int = 0
    failed: int = 0
    error: str | None = None  # "<error class>: <message>" of a failed strategy-minute
    retryable: bool = False  # failed on an outage, or busy after a lock wait: a retry may succeed
    reconciled: int = 0


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: UUID
    minute: datetime
    trigger: str
    status: str  # 'ok' | 'market_closed' | 'late' | 'deadline' | 'failed'
    strategies: tuple[StrategyRun, ...] = field(default_factory=tuple)
    duration_ms: float = 0.0

    @property
    def orders(self) -> int:
        return sum(s.orders for s in self.strategies)

    def counts(self) -> dict[str, int]:
        """What `engine_runs` counts of the run."""
        runs = self.strategies
        return {
            "strategies": len(runs),
            "decisions": sum(r.decisions for r in runs),
            "orders": self.orders,
            "blocked": sum(r.blocked for r in runs),
            "failed": sum(r.failed for r in runs),
            "reconciled": sum(r.reconciled for r in runs),
        }

    @property
    def retryable(self) -> bool:
        """Would retrying help: a strategy failed on an outage or was busy after a lock wait."""
        return any(s.retryable for s in self.strategies)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "minute": self.minute.isoformat(),
            "trigger": self.trigger,
            "status": self.status,
            "orders": self.orders,
            "duration_ms": round(self.duration_ms, 3),
            "strategies": [
                {
                    "strategy": s.strategy,
                    "outcome": s.outcome.value,
                    "decisions": s.decisions,
                    "orders": s.orders,
                    "blocked": s.blocked,
                    "failed": s.failed,
                    "reconciled": s.reconciled,
                    "error": s.error,
                    "retryable": s.retryable,
                }
                for s in self.strategies
            ],
        }
