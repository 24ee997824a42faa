"""A loopback Alpaca paper server: the real alpaca-py client talks to it unchanged.

It speaks the shapes of reference/alpaca.md (money as strings, UUID ids, 422 on a reused
client_order_id in any status) and keeps one paper account (`state.Book`) that behaves as Alpaca
documents by default: an order is `accepted` in the POST's answer and fills on the server's own
schedule (`Policy`: the next request by default; `FakeAlpaca(fill="instant")` fills inside the
POST, "manual" only on `fake.fill(...)`), and oversells, buying power, wash trades and the
pattern-day-trader rule are refused with 403. It can be told to misbehave (`faults`): a status
for the next N requests of a route, a slow answer, an odd answer. HTTP/1.0, one request per
connection, so stopping never waits on an idle keep-alive socket.

Every request the server answers is one tick of its schedule, counted before the answer is
built: with the default policy an order placed by one request is filled when the next arrives.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from tests.fake_alpaca.faults import ERRORS, NO_BODY, Fault, Faults, Json, Odd, mangle, send
from tests.fake_alpaca.handlers import dispatch, route_of
from tests.fake_alpaca.state import INSTANT, MANUAL, OPEN_STATUSES, Book, Policy, PolicySpec

__all__ = [
    "ERRORS", "INSTANT", "KEY", "MANUAL", "OPEN_STATUSES", "SECRET", "FakeAlpaca", "Policy", "route_of"
]  # fmt: skip
KEY, SECRET = "PKFAKEKEY0001", "fake-secret-0001"  # what the fake accepts unless told otherwise


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler: no thread outlives a test
    block_on_close = True
    fake: FakeAlpaca


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    do_POST = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows what the assertions need."""


class FakeAlpaca(Book):
    """Routes are named "METHOD /v2/path" (see `route_of`); the account is `Book`'s state.

    fill: the server's fill policy ("realistic" = next tick, "instant", "manual"/"never", an int
    of ticks, or a `Policy`). multiplier: 1 cash, 2 margin, 4 day-trading margin. shorting: a
    sell of more than is held opens a short instead of a 403.
    """

    def __init__(
        self,
        key: str = KEY,
        secret: str = SECRET,
        *,
        fill: PolicySpec = "realistic",
        cash: Decimal | int = 100_000,
        multiplier: int = 2,
        shorting: bool = False,
        pdt: bool = True,
    ) -> None:
        super().__init__(fill=fill, cash=cash, multiplier=multiplier, shorting=shorting, pdt=pdt)
        self.key, self.secret = key, secret
        self.requests: Counter[str] = Counter()
        self._faults = Faults()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-alpaca"
        )

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
        """Answer `times` requests of `route`, once `after` more went through, with `status`.

        A 429 carries Retry-After and X-RateLimit-* headers, as Alpaca's do."""
        headers = {"Retry-After": "1", "X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0"}
        fault = Fault(
            status, times, body or ERRORS[status], after=after, headers=headers if status == 429 else None
        )
        with self._lock:
            self._faults.add(route, fault)

    def slow(self, route: str, seconds: float, times: int = 1) -> None:
        """Do the work of the next `times` requests of `route`, then wait before answering."""
        with self._lock:
            self._faults.add(route, Fault(None, times, {}, seconds))

    def odd(self, route: str, kind: Odd, times: int = 1, *, after: int = 0) -> None:
        """Answer `times` requests of `route` oddly (see `faults.mangle`)."""
        with self._lock:
            self._faults.add(route, Fault(None, times, {}, after=after, odd=kind))

    def heal(self) -> None:
        """End every injected fault: the outage is over."""
        with self._lock:
            self._faults.clear()

    def fill(
        self, target: str | None = None, *, qty: Decimal | int | None = None, price: Decimal | None = None
    ) -> list[Json]:
        with self._lock:
            return super().fill(target, qty=qty, price=price)

    fill.__doc__ = Book.fill.__doc__

    def fill_open_orders(self) -> None:
        """Every open order filled now (the name older tests use for `fill()`)."""
        self.fill()

    def tick(self, n: int = 1) -> None:
        with self._lock:
            super().tick(n)

    tick.__doc__ = Book.tick.__doc__

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        route = route_of(h.command, path)
        with self._lock:
            self.requests[route] += 1
            fault = self._faults.take(route)
        if (h.headers.get("APCA-API-KEY-ID"), h.headers.get("APCA-API-SECRET-KEY")) != (
            self.key,
            self.secret,
        ):
            send(h, 401, ERRORS[401])
            return
        if fault is not None and fault.status is not None:
            send(h, fault.status, fault.body, fault.headers)
            return
        if fault is not None and fault.odd == "redirect":
            send(h, *mangle("redirect", 200, None))
            return
        length = int(h.headers.get("Content-Length") or 0)
        try:
            body = json.loads(h.rfile.read(length)) if length else {}
        except ValueError:
            send(h, 400, {"code": 40010000, "message": "request body format is invalid"})
            return
        with self._lock:
            super().tick()
            status, payload = dispatch(self, route, path, parse_qs(query), body)
        headers: dict[str, str] = {}
        if fault is not None and fault.odd is not None:
            status, payload, headers = mangle(fault.odd, status, payload)
        if fault is not None:
            self._stopping.wait(fault.delay)
        send(h, status, NO_BODY if payload is None and status == 204 else payload, headers)
