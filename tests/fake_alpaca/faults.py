"""Misbehaviour on demand: error statuses, slow answers and odd answers, per route.

A status fault answers without doing the work (the request never reached the API). A slow fault
does the work and only then sleeps past the client's timeout (the order landed, the client never
heard). An odd answer does the work and then mangles the reply the way a proxy or a newer API
might: an empty 200, a 200 `null`, a redirect (which does no work: it never reached the API), an
exchange code alpaca-py does not know in a position, fields nobody documented.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

Json = dict[str, Any]
Odd = Literal["empty", "null", "redirect", "unknown_exchange", "unknown_fields"]
ODD_KINDS: tuple[Odd, ...] = ("empty", "null", "redirect", "unknown_exchange", "unknown_fields")
ERRORS: dict[int, Json] = {
    401: {"message": "unauthorized."},
    403: {"code": 40310000, "message": "insufficient buying power"},
    404: {"code": 40410000, "message": "order not found"},
    422: {"code": 40010001, "message": "client_order_id must be unique"},
    429: {"code": 42910000, "message": "rate limit exceeded"},
    500: {"code": 50010000, "message": "internal server error"},
    503: {"code": 50310000, "message": "service unavailable"},
}
REDIRECT_TO = "https://paper-api.alpaca.markets"


@dataclass
class Fault:
    status: int | None  # None: answer normally (late, or mangled by `odd`)
    times: int
    body: Json | str  # str: sent as text/html, like a proxy's error page
    delay: float = 0.0
    after: int = 0  # requests of the route still answered normally before the fault starts
    odd: Odd | None = None
    headers: dict[str, str] | None = None


class Faults:
    """Queues of faults by route; `take` consumes the one due for a request, if any."""

    def __init__(self) -> None:
        self.queues: dict[str, list[Fault]] = defaultdict(list)

    def add(self, route: str, fault: Fault) -> None:
        self.queues[route].append(fault)

    def clear(self) -> None:
        self.queues.clear()

    def take(self, route: str) -> Fault | None:
        queue = self.queues[route]
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


def mangle(odd: Odd, status: int, payload: Any) -> tuple[int, Any, dict[str, str]]:
    """The answer an odd fault sends instead of (status, payload): (status, payload, headers).

    A payload of bytes is sent as is (b"" is an empty body)."""
    if odd == "empty":
        return 200, b"", {}
    if odd == "null":
        return 200, None, {}
    if odd == "redirect":
        return 302, b"", {"Location": REDIRECT_TO + "/v2/account"}
    if odd == "unknown_exchange":
        rows = payload if isinstance(payload, list) else [payload]
        for row in rows:
            if isinstance(row, dict) and "exchange" in row:
                row["exchange"] = "IEX"  # not in alpaca-py's AssetExchange (alpaca.md §2.2)
        return status, payload, {}
    return status, _with_unknown_fields(payload), {}


def _with_unknown_fields(payload: Any) -> Any:
    if isinstance(payload, list):
        return [_with_unknown_fields(p) for p in payload]
    if isinstance(payload, dict):
        return {**payload, "x_new_field": {"nested": [1, "two"]}, "subtag": None}
    return payload


NO_BODY = object()  # a payload sentinel: 204 and friends send no body at all


def send(h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    """One answer, Content-Length always set. str payloads go as text/html, bytes as they are,
    anything else as JSON (None becomes `null`); NO_BODY (or a 204) sends no body."""
    if status == 204 or payload is NO_BODY:
        data, kind = b"", "application/json"
    elif isinstance(payload, bytes):
        data, kind = payload, "application/json"
    elif isinstance(payload, str):
        data, kind = payload.encode(), "text/html"
    else:
        data, kind = json.dumps(payload).encode(), "application/json"
    try:
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Connection", "close")
        h.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)
    except OSError:
        pass  # the client gave up (timed out) before a slow answer: that is the point of it
