"""The pre-trade risk gate (docs/architecture.md, "The risk gate"): pure, ordered, and self-explaining.

Each check returns what it saw and the limit it compared against. The gate evaluates every
check, blocks on the first failure, and the engine stores all of them in the decision's
payload, so "why didn't it trade?" is one SQL query. Times are decision minutes, never the
wall clock, so a replay of old minutes answers exactly as the live run did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from strategy_engine.core.exposure import NONE, Working
from strategy_engine.core.models import Check, DayState, Limits, OrderIntent, Side, Verdict


class RiskCode(StrEnum):
    STRATEGY_INACTIVE = "strategy_inactive"
    MARKET_CLOSED = "market_closed"
    STALE_DATA = "stale_data"
    ORDER_WORKING = "order_working"
    MAX_DAILY_TRADES = "max_daily_trades"
    MAX_NOTIONAL_PER_TRADE = "max_notional_per_trade"
    MAX_NOTIONAL_PER_DAY = "max_notional_per_day"
    MAX_POSITION_SIZE = "max_position_size"
    MAX_OPEN_POSITIONS = "max_open_positions"
    COOL_DOWN = "cool_down"
    BUYING_POWER = "buying_power"


# Checks an order that only reduces a position skips: it can always get out.
# max_position_size is skipped too: a reduction makes |position| smaller by definition, and a
# limit lowered after entry must not trap the position (docs/architecture.md, "The risk gate").
REDUCE_ONLY_SKIPS = frozenset(
    {
        RiskCode.MAX_DAILY_TRADES,
        RiskCode.MAX_NOTIONAL_PER_TRADE,
        RiskCode.MAX_NOTIONAL_PER_DAY,
        RiskCode.MAX_POSITION_SIZE,
        RiskCode.COOL_DOWN,
        RiskCode.BUYING_POWER,
    }
)


@dataclass(frozen=True, slots=True)
class RiskContext:
    """Everything the gate may look at, as of decision minute T.

    `positions` are held shares (the broker's positions); `working` the account's unfilled
    order remainders; `buying_power` is already net of what working buys will spend.
    `sells_release_power`: an approved sell adds its notional back to buying power at once (the
    simulated broker fills inside the minute); a real broker (Alpaca) restores it only once the
    sell executes, so for it the in-minute buying power never grows.
    """

    minute: datetime
    is_active: bool
    market_open: bool
    last_bar_ts: Mapping[str, datetime]
    max_bar_age_seconds: float
    day: DayState
    positions: Mapping[str, float]
    last_trade_at: Mapping[str, datetime]
    buying_power: float
    working: Working = NONE
    sells_release_power: bool = True


def exposure(ctx: RiskContext, symbol: str) -> float:
    """Signed shares held plus signed shares still working: the position the strategy sees."""
    return ctx.positions.get(symbol, 0.0) + ctx.working.qty.get(symbol, 0.0)


def signed_qty(intent: OrderIntent) -> float:
    return intent.qty if intent.side is Side.BUY else -intent.qty


def is_reduce_only(before: float, after: float) -> bool:
    """True when the order shrinks an open position without flipping it."""
    if before == 0:
        return False
    return abs(after) < abs(before) and (after == 0 or (after > 0) == (before > 0))


def _limit_check(code: RiskCode, observed: float, limit: float | None) -> Check:
    return Check(code.value, observed, limit, limit is None or observed <= limit)


def _inactive(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    return Check(RiskCode.STRATEGY_INACTIVE.value, ctx.is_active, True, ctx.is_active)


def _market(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    return Check(RiskCode.MARKET_CLOSED.value, ctx.minute.isoformat(), "regular session", ctx.market_open)


def _stale(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    last = ctx.last_bar_ts.get(o.symbol)
    age = None if last is None else (ctx.minute - last).total_seconds()
    ok = age is not None and age <= ctx.max_bar_age_seconds
    return Check(RiskCode.STALE_DATA.value, age, ctx.max_bar_age_seconds, ok)


def _order_working(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    # No second order beside a working one (an exit beside a partly filled entry included):
    # the remainder may still fill, and Alpaca refuses an opposite order as a wash trade anyway.
    working = o.symbol in ctx.working.symbols
    return Check(RiskCode.ORDER_WORKING.value, ctx.working.qty.get(o.symbol, 0.0), 0, not working)


def _daily_trades(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    return _limit_check(RiskCode.MAX_DAILY_TRADES, ctx.day.trades_today + 1, lim.max_daily_trades)


def _notional_trade(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    return _limit_check(RiskCode.MAX_NOTIONAL_PER_TRADE, o.qty * o.price, lim.max_notional_per_trade)


def _notional_day(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    observed = ctx.day.notional_today + o.qty * o.price
    return _limit_check(RiskCode.MAX_NOTIONAL_PER_DAY, observed, lim.max_notional_per_day)


def _position_size(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    after = exposure(ctx, o.symbol) + signed_qty(o)
    return _limit_check(RiskCode.MAX_POSITION_SIZE, abs(after), lim.max_position_size)


def _open_positions(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    held = {s for s, q in ctx.positions.items() if q != 0}
    open_now = len(held | set(ctx.working.qty))
    opens_new = exposure(ctx, o.symbol) == 0
    limit = lim.max_open_positions
    ok = limit is None or not opens_new or open_now < limit
    return Check(RiskCode.MAX_OPEN_POSITIONS.value, open_now, limit, ok)


def _cool_down(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    last = ctx.last_trade_at.get(o.symbol)
    observed = None if last is None else (ctx.minute - last).total_seconds() / 60
    limit = lim.cool_down_minutes
    ok = observed is None or limit is None or observed >= limit
    return Check(RiskCode.COOL_DOWN.value, observed, limit, ok)


def _buying_power(o: OrderIntent, ctx: RiskContext, lim: Limits) -> Check:
    notional = o.qty * o.price
    ok = o.side is Side.SELL or notional <= ctx.buying_power
    return Check(RiskCode.BUYING_POWER.value, notional, ctx.buying_power, ok)


CHECKS: tuple[tuple[RiskCode, Callable[[OrderIntent, RiskContext, Limits], Check]], ...] = (
    (RiskCode.STRATEGY_INACTIVE, _inactive),
    (RiskCode.MARKET_CLOSED, _market),
    (RiskCode.STALE_DATA, _stale),
    (RiskCode.ORDER_WORKING, _order_working),
    (RiskCode.MAX_DAILY_TRADES, _daily_trades),
    (RiskCode.MAX_NOTIONAL_PER_TRADE, _notional_trade),
    (RiskCode.MAX_NOTIONAL_PER_DAY, _notional_day),
    (RiskCode.MAX_POSITION_SIZE, _position_size),
    (RiskCode.MAX_OPEN_POSITIONS, _open_positions),
    (RiskCode.COOL_DOWN, _cool_down),
    (RiskCode.BUYING_POWER, _buying_power),
)


def evaluate(intent: OrderIntent, ctx: RiskContext, limits: Limits) -> Verdict:
    """Run every check in order; the first failure blocks and names the verdict."""
    before = exposure(ctx, intent.symbol)
    reduce_only = is_reduce_only(before, before + signed_qty(intent))
    checks: list[Check] = []
    first_fail: str | None = None
    for code, fn in CHECKS:
        if reduce_only and code in REDUCE_ONLY_SKIPS:
            checks.append(Check(code.value, "skipped: reduce-only", None, True))
            continue
        check = fn(intent, ctx, limits)
        checks.append(check)
        if not check.passed and first_fail is None:
            first_fail = check.code
    return Verdict(first_fail is None, first_fail, tuple(checks), reduce_only)


def apply(ctx: RiskContext, intent: OrderIntent) -> RiskContext:
    """The context after an approved order, so the next symbol is checked against it."""
    notional = intent.qty * intent.price
    positions = dict(ctx.positions)
    positions[intent.symbol] = positions.get(intent.symbol, 0.0) + signed_qty(intent)
    last_trade = dict(ctx.last_trade_at)
    last_trade[intent.symbol] = ctx.minute
    day = replace(
        ctx.day, trades_today=ctx.day.trades_today + 1, notional_today=ctx.day.notional_today + notional
    )
    if intent.side is Side.BUY:
        power = ctx.buying_power - notional
    else:
        power = ctx.buying_power + (notional if ctx.sells_release_power else 0.0)
    return replace(
        ctx,
        day=day,
        positions=MappingProxyType(positions),
        last_trade_at=MappingProxyType(last_trade),
        buying_power=power,
    )
