"""Routes of the fake: the requests alpaca-py sends (reference/alpaca.md §1) and their answers."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote
from uuid import uuid4
from zoneinfo import ZoneInfo

from tests.fake_alpaca.state import OPEN_STATUSES, Book, Json

NY = ZoneInfo("America/New_York")
NOT_FOUND: Json = {"code": 40410000, "message": "order not found"}
ACCOUNT_ID = "1d9eed04-be39-4e01-9b84-a48ac5bbafcf"
ASSET_IDS: dict[str, str] = {}


def route_of(method: str, path: str) -> str:
    """ "METHOD /v2/path", with {id} for an order id and {symbol} for a position."""
    if path.startswith("/v2/orders/"):
        return f"{method} /v2/orders/{{id}}"
    if path.startswith("/v2/positions/"):
        return f"{method} /v2/positions/{{symbol}}"
    return f"{method} {path}"


def dispatch(book: Book, route: str, path: str, query: dict[str, list[str]], body: Json) -> tuple[int, Any]:
    """(HTTP status, JSON payload or None for no body) of one request."""
    tail = unquote(path.rsplit("/", 1)[1])
    if route == "GET /v2/account":
        return 200, account(book)
    if route == "GET /v2/positions":
        return 200, [position(book, s) for s in sorted(book.positions)]
    if route == "GET /v2/positions/{symbol}":
        if tail.upper() not in book.positions:
            return 404, {"code": 40410000, "message": "position does not exist"}
        return 200, position(book, tail.upper())
    if route == "POST /v2/orders":
        return book.place(body)
    if route == "GET /v2/orders":
        return list_orders(book, query)
    if route == "GET /v2/clock":
        return 200, clock(book)
    if route == "DELETE /v2/orders/{id}":
        return book.cancel(tail)
    if route == "GET /v2/orders:by_client_order_id":
        order = book.by_client_id(query.get("client_order_id", [""])[0])
    elif route == "GET /v2/orders/{id}":
        order = book.orders.get(tail)
    else:
        return 404, {"code": 40410000, "message": "endpoint not found"}
    return (200, dict(order)) if order is not None else (404, NOT_FOUND)


def list_orders(book: Book, query: dict[str, list[str]]) -> tuple[int, Any]:
    """GET /v2/orders: status open|closed|all (open), limit (50, at most 500), after/until
    (submitted_at, exclusive), direction (desc), symbols (comma-separated), nested (accepted;
    the fake places simple orders only, so no legs)."""

    def one(name: str, default: str) -> str:
        return query.get(name, [default])[0]

    status, direction = one("status", "open"), one("direction", "desc")
    if status not in ("open", "closed", "all") or direction not in ("asc", "desc"):
        return 422, {"code": 40010001, "message": f"invalid status {status!r} or direction {direction!r}"}
    if one("nested", "false").lower() not in ("true", "false"):
        return 422, {"code": 40010001, "message": "nested must be a boolean"}
    try:
        limit = int(one("limit", "50"))
        after, until = (_when(one(k, "")) for k in ("after", "until"))
    except ValueError as exc:
        return 422, {"code": 40010001, "message": str(exc)}
    if not 1 <= limit <= 500:
        return 422, {"code": 40010001, "message": "limit must be between 1 and 500"}
    symbols = {s for s in one("symbols", "").split(",") if s}
    rows = [
        dict(o)
        for o in book.orders.values()
        if (status == "all" or (o["status"] in OPEN_STATUSES) == (status == "open"))
        and (not symbols or o["symbol"] in symbols)
        and (after is None or datetime.fromisoformat(o["submitted_at"]) > after)
        and (until is None or datetime.fromisoformat(o["submitted_at"]) < until)
    ]
    return 200, (rows[::-1] if direction == "desc" else rows)[:limit]


def _when(text: str) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {text}")
    return when


def account(book: Book) -> Json:
    long_value, short_value = book.market_values()
    equity = book.equity()
    return {
        "id": ACCOUNT_ID, "account_number": book.account_number, "status": "ACTIVE", "currency": "USD",
        "cash": str(book.cash), "buying_power": str(book.buying_power()),
        "regt_buying_power": str(book.buying_power()), "non_marginable_buying_power": str(max(book.cash, 0)),
        "equity": str(equity), "last_equity": str(equity), "portfolio_value": str(equity),
        "long_market_value": str(long_value), "short_market_value": str(short_value),
        "multiplier": str(book.multiplier), "shorting_enabled": book.shorting_enabled,
        "daytrade_count": book.daytrade_count, "pattern_day_trader": book.daytrade_count >= 4,
        "trading_blocked": False, "transfers_blocked": False, "account_blocked": False,
        "trade_suspended_by_user": False, "created_at": "2024-01-01T00:00:00Z", "accrued_fees": "0",
    }  # fmt: skip


def position(book: Book, symbol: str) -> Json:
    qty, avg = book.positions[symbol]
    price = book.prices[symbol]
    held = sum(
        (
            Decimal(o["qty"]) - Decimal(o["filled_qty"])
            for o in book.open_orders(symbol)
            if (o["side"] == "sell") == (qty > 0)
        ),
        Decimal(0),
    )
    return {
        "asset_id": ASSET_IDS.setdefault(symbol, str(uuid4())), "symbol": symbol, "exchange": "ARCA",
        "asset_class": "us_equity", "asset_marginable": True, "qty": str(qty),
        "qty_available": str(qty - held if qty > 0 else qty + held),
        "side": "long" if qty > 0 else "short", "avg_entry_price": str(avg), "cost_basis": str(qty * avg),
        "market_value": str(qty * price), "current_price": str(price), "lastday_price": str(price),
        "change_today": "0", "unrealized_pl": str(qty * (price - avg)),
        "unrealized_plpc": str((price - avg) / avg if qty > 0 else (avg - price) / avg),
        "unrealized_intraday_pl": str(qty * (price - avg)), "unrealized_intraday_plpc": "0",
    }  # fmt: skip


def clock(book: Book) -> Json:
    # next_open/next_close are placeholders: the engine reads only the first two
    now = datetime.now(NY) if book.clock_at is None else book.clock_at.astimezone(NY)
    return {
        "timestamp": now.isoformat(),
        "is_open": book.is_open,
        "next_open": (now + timedelta(days=1)).isoformat(),
        "next_close": (now + timedelta(hours=1)).isoformat(),
    }
