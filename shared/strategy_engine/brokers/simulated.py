"""A broker that fills market orders at once at the decision price, with optional slippage.

It holds an account in memory, built from `broker_positions`/`broker_balances`; the engine
writes it back in the same transaction as the decisions, so a stateless process picks up where
the last one left off and a crash loses nothing but the whole minute. No margin: buying power
is cash. The backfill uses this very class, which is what makes its fills match the tick's.

It refuses what Alpaca paper refuses (`OrderRejected` with Alpaca's code and words), so a backfill
never fills what the live account cannot: a quantity Alpaca does not take (more than 9 decimals,
a fractional short), a buy whose opening part costs more than the buying power, and a short on
an account under Alpaca's margin minimum (equity below $2,000: a cash account).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from strategy_engine.core import calendar
from strategy_engine.core.cash_account import cash_account
from strategy_engine.core.errors import OrderRejected
from strategy_engine.core.models import Account, Order, OrderIntent, Position, Side
from strategy_engine.core.strategies.base import qty_problem

FORBIDDEN = 40310000  # Alpaca's code for "not allowed for this account" (403)
INVALID = 40010001  # Alpaca's code for a validation error (422)
MARGIN_MIN_EQUITY = 2_000.0  # Alpaca: below this equity an account is a cash account, no shorts


class SimulatedBroker:
    authoritative = False

    def __init__(
        self,
        cash: float,
        positions: Iterable[Position] = (),
        slippage_bps: float = 0.0,
        now: datetime | None = None,
    ) -> None:
        self.cash = cash
        self.slippage_bps = slippage_bps
        self._positions: dict[str, Position] = {p.symbol: p for p in positions if p.qty != 0}
        self._orders: dict[str, Order] = {}
        self.now = now

    def account(self) -> Account:
        return cash_account(self.cash, self._positions.values())

    def mark_to_market(self, prices: dict[str, float]) -> float:
        """Equity at the given prices (positions without a price at their entry price)."""
        return self.cash + sum(
            p.qty * prices.get(p.symbol, p.avg_entry_price) for p in self._positions.values()
        )

    def positions(self) -> list[Position]:
        return sorted(self._positions.values(), key=lambda p: p.symbol)

    def position_qty(self, symbol: str) -> float:
        p = self._positions.get(symbol)
        return 0.0 if p is None else p.qty

    def fill_price(self, intent: OrderIntent) -> float:
        slip = self.slippage_bps / 10_000.0
        return intent.price * (1.0 + slip) if intent.side is Side.BUY else intent.price * (1.0 - slip)

    def submit(self, intent: OrderIntent) -> Order:
        existing = self._orders.get(intent.client_order_id)
        if existing is not None:
            return existing
        self.check(intent)
        price = self.fill_price(intent)
        signed = intent.qty if intent.side is Side.BUY else -intent.qty
        self.cash -= signed * price
        self._apply_fill(intent.symbol, signed, price)
        order = Order(
            client_order_id=intent.client_order_id,
            broker_order_id="sim-" + intent.client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.qty,
            status="filled",
            filled_qty=intent.qty,
            filled_avg_price=price,
            submitted_at=self.now or datetime.now(UTC),
        )
        self._orders[intent.client_order_id] = order
        return order

    def check(self, intent: OrderIntent) -> None:
        """Raise `OrderRejected` as Alpaca paper would for this order on this account."""
        held = self.position_qty(intent.symbol)
        signed = intent.qty if intent.side is Side.BUY else -intent.qty
        after = held + signed
        opening = abs(after) if held == 0 or (held > 0) != (after > 0) else max(abs(after) - abs(held), 0.0)
        shorting = after < 0 and opening > 0
        problem = qty_problem(intent.qty) or (qty_problem(opening, short=True) if shorting else None)
        if problem is not None:
            raise OrderRejected(INVALID if "decimal" in problem else FORBIDDEN, problem)
        if shorting and self.account().equity < MARGIN_MIN_EQUITY:
            available = max(held, 0.0)
            raise OrderRejected(
                FORBIDDEN,
                f"insufficient qty available for order (requested: {intent.qty:g}, available: {available:g})",
            )
        # Buying power is cash here (a cash account's rule, stricter than Alpaca's margin): a buy's
        # opening part must fit it. A short's proceeds are cash, so it is not held to it.
        cost = opening * self.fill_price(intent)
        if intent.side is Side.BUY and opening > 0 and cost > self.account().buying_power:
            raise OrderRejected(FORBIDDEN, "insufficient buying power")

    def _apply_fill(self, symbol: str, signed: float, price: float) -> None:
        old = self._positions.get(symbol)
        qty0, avg0 = (0.0, 0.0) if old is None else (old.qty, old.avg_entry_price)
        qty1 = qty0 + signed
        if qty1 == 0:
            self._positions.pop(symbol, None)
            return
        if qty0 == 0 or (qty0 > 0) != (qty1 > 0):
            avg1 = price  # opened, or flipped through zero: the remainder was opened at this price
        elif abs(qty1) > abs(qty0):
            avg1 = (qty0 * avg0 + signed * price) / qty1  # added to the position
        else:
            avg1 = avg0  # reduced: the entry price of what is left does not change
        self._positions[symbol] = Position(symbol, qty1, avg1)

    def get_by_client_id(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def open_orders(self) -> list[Order]:
        """Always empty: a simulated order fills when it is sent. The engine still asks, so the
        exposure model is the same for both brokers."""
        return [o for o in self._orders.values() if o.working_qty != 0]

    def recent_orders(self, after: datetime) -> list[Order]:
        return [o for o in self._orders.values() if o.submitted_at is None or o.submitted_at > after]

    def clock(self) -> tuple[datetime, bool]:
        now = self.now or datetime.now(UTC)
        return now, calendar.is_open(now)
