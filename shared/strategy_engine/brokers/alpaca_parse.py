"""Alpaca's JSON read by the fields the engine needs, and nothing else.

alpaca-py's pydantic models validate every field, enums included: a position on an exchange
code the installed version does not know fails the whole `GET /v2/positions`, and with it
every tick of the account (alpaca-py has shipped such breaks as Alpaca added codes). Here
only what a decision depends on is required (symbol, quantities, side, prices, status, ids);
a missing or malformed required field is a `BrokerUnavailable` naming it, and an unexpected
value anywhere else is logged and ignored.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from strategy_engine.core.errors import BrokerUnavailable
from strategy_engine.core.models import Account, Order, Position, Side

log = logging.getLogger(__name__)

# Order statuses Alpaca documents; another one is kept as sent (and refreshed until final).
KNOWN_STATUSES = frozenset(
    {
        "new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced",
        "pending_cancel", "pending_replace", "pending_review", "accepted", "pending_new",
        "accepted_for_bidding", "stopped", "rejected", "suspended", "calculated", "held",
    }
)  # fmt: skip


def _need(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BrokerUnavailable(f"unexpected answer from Alpaca for {what}: {type(raw).__name__}")
    return raw


def _num(raw: dict[str, Any], key: str, what: str, *, default: float | None = None) -> float:
    value = raw.get(key)
    if value is None or value == "":
        if default is not None:
            return default
        raise BrokerUnavailable(f"Alpaca {what} has no {key}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise BrokerUnavailable(f"Alpaca {what} has an unreadable {key}: {str(value)[:40]!r}")
    return out


def _text(raw: dict[str, Any], key: str, what: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise BrokerUnavailable(f"Alpaca {what} has no {key}")
    return value


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value)  # Python 3.11+ reads "Z" and Alpaca's nanoseconds
    except ValueError:
        log.warning("Alpaca sent an unreadable time %r: ignored", value[:40])
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def account(raw: Any) -> Account:
    a = _need(raw, "the account")
    return Account(
        cash=_num(a, "cash", "account"),
        buying_power=_num(a, "buying_power", "account"),
        equity=_num(a, "equity", "account"),
        account_number=str(a["account_number"]) if a.get("account_number") else None,
    )


def clock(raw: Any) -> tuple[datetime, bool]:
    c = _need(raw, "the clock")
    ts = _time(c.get("timestamp"))
    if ts is None or not isinstance(c.get("is_open"), bool):
        raise BrokerUnavailable("Alpaca clock has no timestamp or is_open")
    return ts, bool(c["is_open"])


def positions(raw: Any) -> list[Position]:
    if not isinstance(raw, list):
        raise BrokerUnavailable(f"unexpected answer from Alpaca for positions: {type(raw).__name__}")
    out = []
    for item in raw:
        p = _need(item, "a position")
        symbol = _text(p, "symbol", "position")
        qty = _num(p, "qty", f"position {symbol}")
        side = p.get("side")
        if side == "short" and qty > 0:
            qty = -qty  # Alpaca sends shorts negative already; some answers do not
        elif side not in ("long", "short"):
            log.warning("Alpaca position %s has side %r: the sign of qty is used", symbol, side)
        out.append(Position(symbol, qty, _num(p, "avg_entry_price", f"position {symbol}", default=0.0)))
    return sorted(out, key=lambda x: x.symbol)


def order(raw: Any) -> Order:
    """One simple order; BrokerUnavailable when a field the engine needs is missing."""
    o = _need(raw, "an order")
    oid = _text(o, "id", "order")
    what = f"order {oid}"
    side = o.get("side")
    if side not in ("buy", "sell"):
        raise BrokerUnavailable(f"Alpaca {what} has side {side!r} (not a simple order)")
    status = _text(o, "status", what)
    if status not in KNOWN_STATUSES:
        log.warning("Alpaca %s has status %r, unknown here: refreshed until final", what, status)
    filled = _num(o, "filled_qty", what, default=0.0)
    avg = _num(o, "filled_avg_price", what, default=0.0)  # "0" before a fill: no fill, no price
    return Order(
        client_order_id=_text(o, "client_order_id", what),
        broker_order_id=oid,
        symbol=_text(o, "symbol", what),
        side=Side(side),
        qty=_num(o, "qty", what),
        status=status,
        filled_qty=filled,
        filled_avg_price=None if filled == 0 or avg == 0 else avg,
        submitted_at=_time(o.get("submitted_at")),
    )


def orders(raw: Any) -> list[Order]:
    """A list of orders; one the engine cannot read (an option leg, a notional order) is logged
    and skipped, never failing the list: it cannot be an order of ours."""
    if not isinstance(raw, list):
        raise BrokerUnavailable(f"unexpected answer from Alpaca for orders: {type(raw).__name__}")
    out = []
    for item in raw:
        try:
            out.append(order(item))
        except BrokerUnavailable as exc:
            log.warning("skipped an order the engine cannot read: %s", exc)
    return out
