"""The fake's paper account: cash, positions, orders, and the rules Alpaca applies to them.

Orders live as Alpaca documents them (reference/alpaca.md §2.4, §4): a POST answers `accepted`,
and the order fills later on the server's own schedule, counted in requests the server answers
("ticks"): a `Policy` per server or per symbol says after how many, whether the first fill is
partial, or that only an explicit `fill()` fills it. A new order is refused (403) for a sell of
more than is held on a long-only account, for buying power (a margin multiplier on equity, not
cash), for a wash trade (an opposite-side order still working) and by the pattern-day-trader rule.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

Json = dict[str, Any]
OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel"}
FORBIDDEN = 40310000
PDT_AT_EQUITY = Decimal(25_000)


@dataclass(frozen=True)
class Policy:
    """When an order fills by itself.

    after: ticks (answered requests) after acceptance; 0 fills inside the POST; None never (only
    `fill()` does). partial: the fraction of qty the first fill takes (the rest follows `after`
    ticks later, unless `rest` is False). Scheduled fills wait while the clock says closed.
    """

    after: int | None = 1
    partial: Decimal | None = None
    rest: bool = True


INSTANT, MANUAL = Policy(after=0), Policy(after=None)
NAMED = {"instant": INSTANT, "manual": MANUAL, "never": MANUAL, "realistic": Policy()}
PolicySpec = Policy | str | int


def as_policy(spec: PolicySpec) -> Policy:
    """ "instant", "manual"/"never", "realistic" (next tick), an int of ticks, or a Policy."""
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, int):
        return Policy(after=spec)
    return NAMED[spec]


def refusal(message: str, code: int = FORBIDDEN, **extra: Any) -> tuple[int, Json]:
    return 403, {"code": code, "message": message, **{k: str(v) for k, v in extra.items()}}


class Book:
    """One paper account in memory. Money and quantities are Decimals; JSON answers use strings."""

    def __init__(
        self,
        *,
        fill: PolicySpec = "realistic",
        cash: Decimal | int = 100_000,
        multiplier: int = 2,
        shorting: bool = False,
        pdt: bool = True,
    ) -> None:
        self.policy = as_policy(fill)
        self.policies: dict[str, Policy] = {}  # by symbol, over `policy`
        self.cash = Decimal(cash)
        self.multiplier = multiplier  # 1 cash account, 2 Reg T margin, 4 day-trading margin
        self.shorting_enabled = shorting
        self.pdt = pdt
        self.daytrade_count = 0
        self.opened_today: set[str] = set()
        self.prices: defaultdict[str, Decimal] = defaultdict(lambda: Decimal(100))
        self.positions: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (signed qty, avg price)
        self.orders: dict[str, Json] = {}  # by order id, in creation order
        # client ids of the order POSTs whose whole body arrived, in order (a client killed mid
        # request leaves a POST counted in `requests` whose body never came: not one of these)
        self.posted: list[str] = []
        self.orders_accepted = 0
        self.order_times: list[float] = []  # time.perf_counter() when each order was accepted
        self.account_number = "PA3FAKE0001"
        self.is_open = True
        self.clock_at: datetime | None = None  # the time /v2/clock answers; None: the wall clock
        self.ticks = 0
        self.cancel_after = 1  # ticks a DELETE spends in pending_cancel
        self._due: dict[str, int] = {}  # order id -> tick at which its next scheduled step runs
        self._plan: dict[str, Policy] = {}  # order id -> the policy in force when it was placed
        self._counted: set[str] = set()  # orders already counted as a day trade
        self._last_ts = datetime.min.replace(tzinfo=UTC)

    def set_policy(self, fill: PolicySpec, symbol: str | None = None) -> None:
        """The fill policy of the server, or of one symbol; applies to orders placed from now on."""
        if symbol is None:
            self.policy = as_policy(fill)
        else:
            self.policies[symbol] = as_policy(fill)

    def by_client_id(self, client_order_id: str) -> Json | None:
        return next((o for o in self.orders.values() if o["client_order_id"] == client_order_id), None)

    def open_orders(self, symbol: str | None = None) -> list[Json]:
        return [
            o for o in self.orders.values() if o["status"] in OPEN_STATUSES and symbol in (None, o["symbol"])
        ]

    def tick(self, n: int = 1) -> None:
        """Advance the schedule by `n` ticks: due cancels complete, due fills run if open."""
        for _ in range(n):
            self.ticks += 1
            for oid, due in list(self._due.items()):
                order = self.orders[oid]
                if due > self.ticks:
                    continue
                if order["status"] == "pending_cancel":
                    self._finish(order, "canceled", canceled_at=self._now())
                elif self.is_open:
                    self._scheduled_fill(order)

    def _scheduled_fill(self, order: Json) -> None:
        policy = self._plan[order["id"]]
        remaining = _unfilled(order)
        first = Decimal(order["filled_qty"]) == 0
        if first and policy.partial is not None:
            self._apply_fill(order, (remaining * policy.partial).quantize(Decimal(1)) or Decimal(1), None)
            if policy.rest and policy.after is not None and order["status"] in OPEN_STATUSES:
                self._due[order["id"]] = self.ticks + max(policy.after, 1)
            else:
                self._due.pop(order["id"], None)
            return
        self._apply_fill(order, remaining, None)

    def fill(
        self, target: str | None = None, *, qty: Decimal | int | None = None, price: Decimal | None = None
    ) -> list[Json]:
        """Fill open orders now, whatever the policy and the clock; returns the orders touched.

        target: an order id, a client order id or a symbol (None: every open order). qty: how
        much of each (default: all that remains), so a partial fill is `fill(sym, qty=1)`.
        """
        touched = []
        for order in self.open_orders():
            if target in (None, order["id"], order["client_order_id"], order["symbol"]):
                if order["status"] == "pending_cancel":
                    continue
                remaining = _unfilled(order)
                self._apply_fill(order, min(Decimal(qty), remaining) if qty is not None else remaining, price)
                touched.append(order)
        return touched

    def place(self, body: Json) -> tuple[int, Json]:
        cid = str(body.get("client_order_id") or uuid4())
        self.posted.append(cid)
        if self.by_client_id(cid) is not None:
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        if len(cid) > 128:
            return 422, {"code": 40010001, "message": "client_order_id must be no more than 128 characters"}
        symbol, side = str(body.get("symbol") or ""), body.get("side")
        qty = _plain(Decimal(str(body.get("qty") or 0)))
        if not qty > 0 or side not in ("buy", "sell") or not symbol:
            return 422, {"code": 40010001, "message": "qty must be > 0"}
        refused = self._refusal(symbol, side, qty)
        if refused is not None:
            return refused
        now = self._now()
        order: Json = {
            "id": str(uuid4()), "client_order_id": cid, "created_at": now, "updated_at": now,
            "submitted_at": now, "filled_at": None, "canceled_at": None, "expired_at": None,
            "failed_at": None, "asset_id": str(uuid4()), "symbol": symbol, "asset_class": "us_equity",
            "notional": None, "qty": str(qty), "filled_qty": "0", "filled_avg_price": None,
            "order_class": "", "order_type": "market", "type": "market", "side": side,
            "time_in_force": body.get("time_in_force", "day"), "limit_price": None, "stop_price": None,
            "status": "accepted", "extended_hours": False, "legs": None, "position_intent": None,
        }  # fmt: skip
        self.orders[order["id"]] = order
        self.orders_accepted += 1
        self.order_times.append(time.perf_counter())
        policy = self._plan[order["id"]] = self.policies.get(symbol, self.policy)
        if policy.after == 0:
            self._scheduled_fill(order)
        elif policy.after is not None:
            self._due[order["id"]] = self.ticks + policy.after
        return 200, dict(order)

    def cancel(self, order_id: str) -> tuple[int, Json | None]:
        """DELETE: 204 and `pending_cancel`, `canceled` `cancel_after` ticks later; 422 once filled."""
        order = self.orders.get(order_id)
        if order is None:
            return 404, {"code": 40410000, "message": "order not found"}
        if order["status"] == "filled":
            return 422, {"code": 42210000, "message": 'order is already in "filled" state'}
        if order["status"] in OPEN_STATUSES - {"pending_cancel"}:
            self._finish(order, "pending_cancel")
            self._due[order_id] = self.ticks + self.cancel_after
        return 204, None  # cancelling a canceled order succeeds again (alpaca.md §7)

    def _refusal(self, symbol: str, side: str, qty: Decimal) -> tuple[int, Json] | None:
        opposite = "sell" if side == "buy" else "buy"
        if any(o["side"] == opposite for o in self.open_orders(symbol)):
            return refusal("potential wash trade detected. use complex orders")
        held = self.positions.get(symbol, (Decimal(0), Decimal(0)))[0]
        reduces = (held > 0 and side == "sell") or (held < 0 and side == "buy")
        if self.pdt and reduces and symbol in self.opened_today and self._is_pdt_restricted():
            return refusal("trade denied due to pattern day trading protection", code=40310100)
        if side == "sell":
            for_orders = sum(
                (_unfilled(o) for o in self.open_orders(symbol) if o["side"] == "sell"), Decimal(0)
            )
            available = max(held, Decimal(0)) - for_orders
            if qty > available and not self.shorting_enabled:
                return refusal(
                    f"insufficient qty available for order (requested: {qty}, available: {available})",
                    available=available,
                    existing_qty=held,
                    held_for_orders=for_orders,
                )
            opening = qty - max(available, Decimal(0))  # the part that would go short
        else:
            opening = qty if held >= 0 else max(qty + held, Decimal(0))
        cost = opening * self.prices[symbol]
        if opening > 0 and cost > self.buying_power():
            return refusal("insufficient buying power", buying_power=self.buying_power(), cost_basis=cost)
        return None

    def _is_pdt_restricted(self) -> bool:
        return self.daytrade_count >= 3 and self.equity() < PDT_AT_EQUITY

    def _apply_fill(self, order: Json, qty: Decimal, price: Decimal | None) -> None:
        symbol = order["symbol"]
        price = self.prices[symbol] if price is None else price
        signed = qty if order["side"] == "buy" else -qty
        q0, avg0 = self.positions.get(symbol, (Decimal(0), Decimal(0)))
        q1 = q0 + signed
        self.cash -= signed * price
        reducing = q0 != 0 and (q0 > 0) != (signed > 0)
        if reducing and symbol in self.opened_today and order["id"] not in self._counted:
            self._counted.add(order["id"])  # one day trade per order, however many partial fills
            self.daytrade_count += 1
        if abs(q1) > abs(q0) or (q0 > 0) != (q1 > 0):
            self.opened_today.add(symbol)
        if q1 == 0:
            self.positions.pop(symbol, None)
        elif q0 == 0 or (q0 > 0) != (q1 > 0):
            self.positions[symbol] = (q1, price)  # opened, or flipped through zero
        else:
            avg1 = (q0 * avg0 + signed * price) / q1 if abs(q1) > abs(q0) else avg0
            self.positions[symbol] = (q1, avg1)
        filled0 = Decimal(order["filled_qty"])
        avg_fill0 = Decimal(order["filled_avg_price"] or 0)
        filled1 = filled0 + qty
        done = filled1 >= Decimal(order["qty"])
        order.update(
            filled_qty=str(filled1),
            filled_avg_price=str((filled0 * avg_fill0 + qty * price) / filled1),
            status="filled" if done else "partially_filled",
            updated_at=self._now(),
            filled_at=self._now() if done else None,
        )
        if done:
            self._due.pop(order["id"], None)

    def _finish(self, order: Json, status: str, **fields: Any) -> None:
        order.update(status=status, updated_at=self._now(), **fields)
        if status not in OPEN_STATUSES:
            self._due.pop(order["id"], None)

    def market_values(self) -> tuple[Decimal, Decimal]:
        """(long, short) market value; short is negative."""
        values = [q * self.prices[s] for s, (q, _) in self.positions.items()]
        return sum((v for v in values if v > 0), Decimal(0)), sum((v for v in values if v < 0), Decimal(0))

    def equity(self) -> Decimal:
        long_value, short_value = self.market_values()
        return self.cash + long_value + short_value

    def buying_power(self) -> Decimal:
        """multiplier x equity, less the market value held and what open buys reserve.

        With multiplier 1 (a cash account, no shorts) that is cash less open buys; with 2 it is
        Reg T's 2 x (equity - long/2).
        """
        long_value, short_value = self.market_values()
        buys = [o for o in self.open_orders() if o["side"] == "buy"]
        reserved = sum((_unfilled(o) * self.prices[o["symbol"]] for o in buys), Decimal(0))
        return max(self.multiplier * self.equity() - long_value + short_value - reserved, Decimal(0))

    def _now(self) -> str:
        """Now, strictly later than every earlier stamp: `after=` filters see a total order."""
        now = max(datetime.now(UTC), self._last_ts + timedelta(microseconds=1))
        self._last_ts = now
        return now.isoformat()


def _unfilled(order: Json) -> Decimal:
    return Decimal(order["qty"]) - Decimal(order["filled_qty"])


def _plain(d: Decimal) -> Decimal:
    """10.0 -> 10, 1.50 -> 1.5: how Alpaca writes quantities (alpaca-py sends floats)."""
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()
