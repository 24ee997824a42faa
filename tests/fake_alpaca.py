"""A loopback Alpaca paper server: the real alpaca-py client talks to it unchanged.

It speaks the shapes of reference/alpaca.md (money as strings, UUID ids, 422 on a reused
client_order_id in any status), keeps one account in memory, and can be told to misbehave: a
status for the next N requests of a route, or a slow answer that does the work and only then
sleeps past the client's timeout (the order landed, the client never heard). HTTP/1.0, one
request per connection, so stopping never waits on an idle keep-alive socket; `keep_alive=True`
(the latency benchmark) answers HTTP/1.1 on persistent connections instead, and `delay` adds a
fixed time to every request before it is handled (a network round trip).

Several accounts share one server, as at Alpaca: `add_account` returns another account reached
with other keys, with its own cash, positions, orders and request counts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs
from uuid import uuid4
from zoneinfo import ZoneInfo

Json = dict[str, Any]
KEY, SECRET = "PKFAKEKEY0001", "fake-secret-0001"  # what the fake accepts unless told otherwise
NY = ZoneInfo("America/New_York")
ERRORS: dict[int, Json] = {
    401: {"message": "unauthorized."},
    403: {"code": 40310000, "message": "insufficient buying power"},
    404: {"code": 40410000, "message": "order not found"},
    422: {"code": 40010001, "message": "client_order_id must be unique"},
    429: {"code": 42910000, "message": "rate limit exceeded"},
    500: {"code": 50010000, "message": "internal server error"},
    503: {"code": 50310000, "message": "service unavailable"},
}
OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled"}


@dataclass
class _Fault:
    status: int | None  # None: answer normally, but late
    times: int
    body: Json | str  # str: sent as text/html, like a proxy's error page
    delay: float = 0.0
    after: int = 0  # requests of the route still answered normally before the fault starts


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler: no thread outlives a test
    block_on_close = True
    fake: FakeAlpaca


class _KeepAliveServer(_Server):
    daemon_threads = True  # idle persistent connections must not hold up server_close()
    block_on_close = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows what the assertions need."""


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out apart: no delayed-ACK stall between


class FakeAlpaca:
    """Routes are named "METHOD /v2/path", with {id} for an order id: see `route_of`."""

    def __init__(
        self,
        key: str = KEY,
        secret: str = SECRET,
        *,
        fill: bool = True,
        keep_alive: bool = False,
        delay: float = 0.0,
        account_number: str = "PA3FAKE0001",
    ):
        self.key, self.secret, self.fill = key, secret, fill
        self.keep_alive, self.delay, self.account_number = keep_alive, delay, account_number
        self.cash = Decimal(100_000)
        self.prices: dict[str, Decimal] = defaultdict(lambda: Decimal(100))
        self.positions: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (signed qty, avg price)
        self.orders: dict[str, Json] = {}  # by order id, in creation order
        self.requests: Counter[str] = Counter()
        self.orders_accepted = 0
        self.order_times: list[float] = []  # time.perf_counter() when each order was accepted
        self.is_open = True
        self._faults: dict[str, list[_Fault]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._accounts: dict[tuple[str, str], FakeAlpaca] = {(key, secret): self}
        self._server: _Server
        if keep_alive:
            self._server = _KeepAliveServer(("127.0.0.1", 0), _KeepAliveHandler)
        else:
            self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-alpaca"
        )

    def add_account(self, key: str, secret: str, account_number: str) -> FakeAlpaca:
        """Another Alpaca account on this server, reached with (key, secret); not started itself."""
        other = FakeAlpaca.__new__(FakeAlpaca)
        other.key, other.secret, other.fill = key, secret, self.fill
        other.keep_alive, other.delay, other.account_number = self.keep_alive, self.delay, account_number
        other.cash, other.prices, other.positions = Decimal(100_000), defaultdict(lambda: Decimal(100)), {}
        other.orders, other.requests, other.orders_accepted, other.order_times = {}, Counter(), 0, []
        other.is_open, other._faults, other._lock = True, defaultdict(list), self._lock
        other._stopping, other._accounts, other._server = self._stopping, self._accounts, self._server
        self._accounts[(key, secret)] = other
        return other

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeAlpaca:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stopping.set()  # wakes slow answers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def fail(
        self, route: str, status: int, times: int = 1, body: Json | str | None = None, *, after: int = 0
    ) -> None:
        """Answer `times` requests of `route`, once `after` more went through, with `status`."""
        with self._lock:
            self._faults[route].append(_Fault(status, times, body or ERRORS[status], after=after))

    def slow(self, route: str, seconds: float, times: int = 1) -> None:
        """Do the work of the next `times` requests of `route`, then wait before answering."""
        with self._lock:
            self._faults[route].append(_Fault(None, times, {}, seconds))

    def heal(self) -> None:
        """End every injected fault: the outage is over."""
        with self._lock:
            self._faults.clear()

    def fill_open_orders(self) -> None:
        with self._lock:
            for order in self.orders.values():
                if order["status"] in OPEN_STATUSES:
                    self._fill(order)

    def by_client_id(self, client_order_id: str) -> Json | None:
        return next((o for o in self.orders.values() if o["client_order_id"] == client_order_id), None)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        """Route to the account the request's keys reach; unknown keys get 401."""
        if self.delay:
            time.sleep(self.delay)
        keys = (str(h.headers.get("APCA-API-KEY-ID")), str(h.headers.get("APCA-API-SECRET-KEY")))
        self._accounts.get(keys, self)._handle(h, keys)

    def _handle(self, h: BaseHTTPRequestHandler, keys: tuple[str, str]) -> None:
        path, _, query = h.path.partition("?")
        route = route_of(h.command, path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""  # read whatever the answer: the connection may go on
        with self._lock:
            self.requests[route] += 1
            fault = self._take_fault(route)
        if keys != (self.key, self.secret):
            _send(h, 401, ERRORS[401])
        elif fault is not None and fault.status is not None:
            _send(h, fault.status, fault.body)
        else:
            body = json.loads(raw) if raw else {}
            with self._lock:
                status, payload = self._dispatch(route, path, parse_qs(query), body)
            if fault is not None:
                self._stopping.wait(fault.delay)
            _send(h, status, payload)

    def _take_fault(self, route: str) -> _Fault | None:
        queue = self._faults[route]
        if not queue:
            return None
        fault = queue[0]
        if fault.after > 0:
            fault.after -= 1
            return None
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    def _dispatch(self, route: str, path: str, query: dict[str, list[str]], body: Json) -> tuple[int, Any]:
        if route == "GET /v2/account":
            return 200, self._account()
        if route == "GET /v2/positions":
            return 200, [self._position(s, q, avg) for s, (q, avg) in sorted(self.positions.items())]
        if route == "POST /v2/orders":
            return self._create(body)
        if route == "GET /v2/orders":
            wanted = query.get("status", ["open"])[0]
            rows = [
                o
                for o in self.orders.values()
                if wanted == "all" or (o["status"] in OPEN_STATUSES) == (wanted == "open")
            ]
            return 200, rows[::-1][: int(query.get("limit", ["50"])[0])]
        if route == "GET /v2/clock":
            return 200, self._clock()
        if route == "GET /v2/orders:by_client_order_id":
            order = self.by_client_id(query.get("client_order_id", [""])[0])
        elif route == "GET /v2/orders/{id}":
            order = self.orders.get(path.rsplit("/", 1)[1])
        else:
            return 404, {"code": 40410000, "message": "endpoint not found"}
        return (200, order) if order is not None else (404, ERRORS[404])

    def _create(self, body: Json) -> tuple[int, Json]:
        cid = str(body.get("client_order_id") or uuid4())
        if self.by_client_id(cid) is not None:
            return 422, ERRORS[422]
        if len(cid) > 128:
            return 422, {"code": 40010001, "message": "client_order_id must be no more than 128 characters"}
        symbol, side, qty = body["symbol"], body["side"], Decimal(str(body["qty"]))
        if not qty > 0:
            return 422, {"code": 40010001, "message": "qty must be > 0"}
        if side == "buy" and qty * self.prices[symbol] > self.cash:
            return 403, ERRORS[403]
        now = _iso(datetime.now(UTC))
        order: Json = {
            "id": str(uuid4()), "client_order_id": cid, "created_at": now, "updated_at": now,
            "submitted_at": now, "filled_at": None, "asset_id": str(uuid4()), "symbol": symbol,
            "asset_class": "us_equity", "notional": None, "qty": str(qty), "filled_qty": "0",
            "filled_avg_price": None, "order_class": "", "order_type": "market", "type": "market",
            "side": side, "time_in_force": body.get("time_in_force", "day"), "limit_price": None,
            "stop_price": None, "status": "accepted", "extended_hours": False, "legs": None,
        }  # fmt: skip
        self.orders[order["id"]] = order
        self.orders_accepted += 1
        self.order_times.append(time.perf_counter())
        if self.fill:
            self._fill(order)
        return 200, order

    def _fill(self, order: Json) -> None:
        price, qty = self.prices[order["symbol"]], Decimal(order["qty"])
        signed = qty if order["side"] == "buy" else -qty
        q0, avg0 = self.positions.get(order["symbol"], (Decimal(0), Decimal(0)))
        q1 = q0 + signed
        self.cash -= signed * price
        if q1 == 0:
            self.positions.pop(order["symbol"], None)
        elif q0 == 0 or (q0 > 0) != (q1 > 0):
            self.positions[order["symbol"]] = (q1, price)  # opened, or flipped through zero
        else:
            avg1 = (q0 * avg0 + signed * price) / q1 if abs(q1) > abs(q0) else avg0
            self.positions[order["symbol"]] = (q1, avg1)
        now = _iso(datetime.now(UTC))
        order.update(
            status="filled", filled_qty=str(qty), filled_avg_price=str(price), filled_at=now, updated_at=now
        )

    def _account(self) -> Json:
        long_value = sum((q * self.prices[s] for s, (q, _) in self.positions.items() if q > 0), Decimal(0))
        short_value = sum((q * self.prices[s] for s, (q, _) in self.positions.items() if q < 0), Decimal(0))
        equity = self.cash + long_value + short_value
        return {
            "id": "1d9eed04-be39-4e01-9b84-a48ac5bbafcf", "account_number": self.account_number, "status": "ACTIVE",
            "currency": "USD", "cash": str(self.cash), "buying_power": str(max(self.cash, Decimal(0))),
            "equity": str(equity), "portfolio_value": str(equity), "long_market_value": str(long_value),
            "short_market_value": str(short_value), "multiplier": "1", "shorting_enabled": True,
            "trading_blocked": False, "account_blocked": False, "created_at": "2024-01-01T00:00:00Z",
        }  # fmt: skip

    def _position(self, symbol: str, qty: Decimal, avg: Decimal) -> Json:
        price = self.prices[symbol]
        return {
            "asset_id": str(uuid4()), "symbol": symbol, "exchange": "ARCA", "asset_class": "us_equity",
            "asset_marginable": True, "qty": str(qty), "qty_available": str(qty),
            "side": "long" if qty > 0 else "short", "avg_entry_price": str(avg), "cost_basis": str(qty * avg),
            "market_value": str(qty * price), "current_price": str(price), "lastday_price": str(price),
            "change_today": "0", "unrealized_pl": str(qty * (price - avg)), "unrealized_plpc": "0",
            "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0",
        }  # fmt: skip

    def _clock(self) -> Json:
        now = datetime.now(NY)  # next_open/next_close are placeholders: the engine reads only the first two
        return {
            "timestamp": _iso(now),
            "is_open": self.is_open,
            "next_open": _iso(now + timedelta(days=1)),
            "next_close": _iso(now + timedelta(hours=1)),
        }


def route_of(method: str, path: str) -> str:
    if path.startswith("/v2/orders/"):
        return f"{method} /v2/orders/{{id}}"
    return f"{method} {path}"


def _iso(ts: datetime) -> str:
    return ts.isoformat()


def _send(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    data = text.encode()
    try:
        h.send_response(status)
        h.send_header("Content-Type", "text/html" if isinstance(payload, str) else "application/json")
        if h.protocol_version == "HTTP/1.0":
            h.send_header("Connection", "close")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    except OSError:
        pass  # the client gave up (timed out) before a slow answer: that is the point of it
