"""A loopback Alpaca paper server: the real alpaca-py client talks to it unchanged.

It speaks the shapes of reference/alpaca.md (money as strings, UUID ids, 422 on a reused
client_order_id in any status) and keeps one paper account (`state.Book`) that behaves as Alpaca
documents by default: an order is `accepted` in the POST's answer and fills on the server's own
schedule (`Policy`: the next request by default; `FakeAlpaca(fill="instant")` fills inside the
POST, "manual" only on `fake.fill(...)`), and oversells, buying power, wash trades and the
pattern-day-trader rule are refused with 403. It can be told to misbehave (`faults`): a status
for the next N requests of a route, a slow answer, an odd answer. HTTP/1.0, one request per
connection, so stopping never waits on an idle keep-alive socket; `keep_alive=True` (the latency
benchmark) answers HTTP/1.1 on persistent connections instead, and `delay` adds a fixed time to
every request before it is handled (a network round trip).

Several accounts share one server, as at Alpaca: `add_account` returns another account reached
with other keys, with its own book, request counts and faults.

Every request the server answers is one tick of its schedule, counted before the answer is
built: with the default policy an order placed by one request is filled when the next arrives.
"""

from __future__ import annotations

import json
import threading
import time
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
    # socketserver's default backlog is 5: forty connections opened at once (ten accounts' reads)
    # would see SYNs dropped and retried a second later, which no real API server does.
    request_queue_size = 128
    fake: FakeAlpaca


class _KeepAliveServer(_Server):
    daemon_threads = True  # idle persistent connections must not hold up server_close()
    block_on_close = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    do_POST = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows what the assertions need."""


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out apart: no delayed-ACK stall between


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
        keep_alive: bool = False,
        delay: float = 0.0,
    ) -> None:
        super().__init__(fill=fill, cash=cash, multiplier=multiplier, shorting=shorting, pdt=pdt)
        self.key, self.secret, self.delay = key, secret, delay
        self.requests: Counter[str] = Counter()
        self._faults = Faults()
        self._lock = threading.RLock()
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

    def add_account(
        self, key: str, secret: str, account_number: str, *, fill: PolicySpec = "realistic"
    ) -> FakeAlpaca:
        """Another Alpaca account on this server, reached with (key, secret); not started itself."""
        other = FakeAlpaca.__new__(FakeAlpaca)
        Book.__init__(other, fill=fill)
        other.key, other.secret, other.delay, other.account_number = key, secret, self.delay, account_number
        other.requests, other._faults = Counter(), Faults()
        other._lock, other._stopping, other._accounts = self._lock, self._stopping, self._accounts
        other._server, other._thread = self._server, self._thread
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
        self,
        route: str,
        status: int,
        times: int = 1,
        body: Json | str | None = None,
        *,
        after: int = 0,
        retry_after: str = "1",
    ) -> None:
        """Answer `times` requests of `route`, once `after` more went through, with `status`.

        A 429 carries Retry-After (`retry_after` seconds) and X-RateLimit-* headers, as Alpaca's do."""
        headers = {"Retry-After": retry_after, "X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0"}
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

    def hold_open(self, n: int, symbol: str = "XLF", prefix: str = "other-") -> list[str]:
        """`n` buy orders of 1 share placed straight into the book (client ids `prefix`0, 1, ...)
        and left working whatever the fill policy; their order ids."""
        with self._lock:
            policy, self.policy = self.policy, MANUAL
            try:
                placed = [
                    self.place(
                        {"symbol": symbol, "side": "buy", "qty": "1", "client_order_id": f"{prefix}{k}"}
                    )
                    for k in range(n)
                ]
            finally:
                self.policy = policy
        assert {status for status, _ in placed} == {200}, placed[:1]
        return [str(order["id"]) for _, order in placed]

    def fill_open_orders(self) -> None:
        """Every open order filled now (the name older tests use for `fill()`)."""
        self.fill()

    def tick(self, n: int = 1) -> None:
        with self._lock:
            super().tick(n)

    tick.__doc__ = Book.tick.__doc__

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        """Route to the account the request's keys reach; unknown keys get 401."""
        if self.delay:
            time.sleep(self.delay)
        keys = (str(h.headers.get("APCA-API-KEY-ID")), str(h.headers.get("APCA-API-SECRET-KEY")))
        self._accounts.get(keys, self)._handle(h, keys)

    def _handle(self, h: BaseHTTPRequestHandler, keys: tuple[str, str]) -> None:
        path, _, query = h.path.partition("?")
        route = route_of(h.command, path)
        header = str(h.headers.get("Content-Length") or "0")
        length = int(header) if header.isdigit() else -1
        raw = (
            h.rfile.read(length) if length > 0 else b""
        )  # read whatever the answer: the connection may go on
        with self._lock:
            self.requests[route] += 1
        if length < 0:  # not a length: a real server answers 400 and reads nothing
            send(h, 400, {"code": 40010000, "message": "request body format is invalid"})
            return
        if len(raw) < length:  # the client went away mid-body: a real server handles nothing
            return
        with self._lock:
            fault = self._faults.take(route)
        if keys != (self.key, self.secret):
            send(h, 401, ERRORS[401])
            return
        if fault is not None and fault.status is not None:
            send(h, fault.status, fault.body, fault.headers)
            return
        if fault is not None and fault.odd == "redirect":
            send(h, *mangle("redirect", 200, None))
            return
        try:
            body = json.loads(raw) if raw else {}
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
