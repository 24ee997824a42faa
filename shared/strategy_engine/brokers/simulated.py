"""A broker that fills market orders at once at the decision price, with optional slippage.

It holds an account in memory, built from `broker_positions`/`broker_balances`; the engine
writes it back in the same transaction as the decisions, so a stateless process picks up where
the last one left off and a crash loses nothing but the whole minute. No margin: buying power
is cash. The backfill uses this very class, which is what makes its fills match the tick's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from strategy_engine.core import calendar
from strategy_engine.core.models import Account, Order, OrderIntent, Position, Side


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
        equity = self.cash + sum(p.qty * p.avg_entry_price for p in self._positions.values())
        return Account(cash=self.cash, buying_power=max(self.cash, 0.0), equity=equity)

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
