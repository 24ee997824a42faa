"""The HTTP entry points' one request handling, shared by every adapter.

functions/main.py (functions-framework), functions/lambda_handler.py (Function URL, EventBridge
Scheduler) and `strategy-engine serve` turn their platform's request into an `HttpRequest`, call
`handle()` and render the `HttpResponse`; nothing else. A request goes, in this order: route
(404) -> authentication (401/403; not for /health, the liveness probe) -> method (405) -> size
(413) -> content type (415) -> strict validation (400) -> the core. Everything refused before
the core never opens a database connection, so a refused request writes nothing.

Authentication: with `ENGINE_TRUST_PLATFORM_AUTH` the platform has already authenticated the
caller (Cloud Run IAM checking the scheduler's OIDC token, a Lambda URL with AWS_IAM), else
`Authorization: Bearer <ENGINE_HTTP_SECRET>`, compared in constant time. With neither configured
(or a secret shorter than 16 characters) every request is refused with 403: the functions fail
closed. A wrong or missing bearer is 401.

Outcomes: refused input 4xx naming the field; an outage (`Unavailable`, or a tick in which a
strategy failed on one) 503 with Retry-After, so the scheduler retries the minute; anything else
500 with the request id only (trace, scrubbed `detail` to the log). One `request` line, no query.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, field_validator

from strategy_engine import engine, invocation, logs
from strategy_engine.core import calendar
from strategy_engine.core.errors import InputError, Unavailable
from strategy_engine.http import health
from strategy_engine.http.messages import (
    MAX_BODY_BYTES,
    BarRecord,
    HttpError,
    HttpRequest,
    HttpResponse,
    Misconfigured,
    SchedulerEvent,
    TickBody,
    WebhookPayload,
    error_fields,
    from_flask,
    retry_later,
    to_flask,
    validate,
)
from strategy_engine.http.services import Services, secret_values
from strategy_engine.settings import Settings

__all__ = [
    "MAX_BODY_BYTES",
    "ROUTES",
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "Misconfigured",
    "Services",
    "from_flask",
    "handle",
    "handle_scheduled",
    "run_tick",
    "secret_values",
    "to_flask",
]

if TYPE_CHECKING:
    from strategy_engine.backtest.backfill import BackfillRequest

MIN_SECRET_LENGTH = 16  # e.g. `openssl rand -hex 32`, as deploy.sh suggests
# A T at most this far ahead of the host clock is waited for by the engine; further ahead it is
# refused (400, with an engine_runs row): deciding a minute before its bars exist would mark it
# processed and shut out the real run (a forced Cloud Scheduler run can carry the *next*
# scheduled time; a feed can insert a bar before its minute ends).
CLOCK_SKEW = invocation.CLOCK_SKEW
WEBHOOK_MAX_LAG = timedelta(minutes=2)  # an older bar (a data backfill) does not tick live
SCHEDULE_TIME_HEADER = "x-cloudscheduler-scheduletime"


# ---- the entry point ---------------------------------------------------------------------------


def handle(route: str, req: HttpRequest, services: Services | None = None) -> HttpResponse:
    """One HTTP request to one of ROUTES, start to finish: never raises."""
    return _respond(route, req.method, req.path, req.request_id, lambda s: _dispatch(route, req, s), services)


def handle_scheduled(
    event: Mapping[str, Any], request_id: str | None = None, services: Services | None = None
) -> HttpResponse:
    """An EventBridge Scheduler event: IAM already authorised the invocation; tick its minute."""

    def run(s: Services) -> HttpResponse:
        ev = validate(SchedulerEvent, dict(event) if isinstance(event, Mapping) else {})
        return run_tick(s, _minute(ev.minute, "minute"), "eventbridge", field="minute")

    return _respond("tick", "EVENT", "scheduler", request_id, run, services)


def _respond(
    route: str,
    method: str,
    path: str,
    request_id: str | None,
    work: Callable[[Services], HttpResponse],
    services: Services | None,
) -> HttpResponse:
    started = time.perf_counter()
    rid = request_id or uuid.uuid4().hex
    with logs.bind(request_id=rid):
        try:
            resp = work(services or Services.from_settings())
        except HttpError as exc:
            resp = exc.response()
        except InputError as exc:
            resp = HttpResponse(exc.status, {"error": str(exc)})
        except Unavailable as exc:
            logs.event("dependency unavailable", level=logging.ERROR, error=str(exc), detail=exc.detail)
            resp = retry_later({"error": exc.public})
        except Exception as exc:  # the one broad catch: the caller gets an id, the log the trace
            logs.exception("unexpected error", **error_fields(exc))
            resp = HttpResponse(500, {"error": "internal error"})
        resp = HttpResponse(resp.status, {**resp.body, "request_id": rid}, resp.headers)
        _log_request(route, method, path, resp, started)
    return resp


def _log_request(route: str, method: str, path: str, resp: HttpResponse, started: float) -> None:
    level = logging.ERROR if resp.status >= 500 else logging.WARNING if resp.status >= 400 else logging.INFO
    logs.event(
        "request",
        level=level,
        route=route,
        method=method,
        path=path.split("?", 1)[0],  # never a query string: its values may be credentials
        status=resp.status,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        run_id=resp.body.get("run_id"),
        outcome=resp.body.get("status"),
        error=resp.body.get("error"),
    )


# ---- refusals before the core ------------------------------------------------------------------


def _dispatch(route: str, req: HttpRequest, services: Services) -> HttpResponse:
    spec = ROUTES.get(route)
    if spec is None:
        raise HttpError(404, f"no such route {req.path!r}: {', '.join('/' + r for r in ROUTES)}")
    if route not in PUBLIC_ROUTES:
        _authenticate(req, services.settings)
    method, needs_body, run = spec
    # HEAD is GET without the body (the server drops it): what an uptime probe may send
    if req.method.upper() not in ((method, "HEAD") if method == "GET" else (method,)):
        raise HttpError(405, f"method {req.method} not allowed: use {method}", headers={"Allow": method})
    return run(req, _body(req, needs_body) if method == "POST" else b"", services)


def _authenticate(req: HttpRequest, settings: Settings) -> None:
    if settings.engine_trust_platform_auth and req.platform_authenticated is not False:
        return
    secret = settings.engine_http_secret.get_secret_value() if settings.engine_http_secret else ""
    if len(secret) < MIN_SECRET_LENGTH:  # unset, or guessable: either way the function stays shut
        raise HttpError(
            403, f"forbidden: no ENGINE_HTTP_SECRET of {MIN_SECRET_LENGTH}+ characters configured"
        )
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    # Digests of equal length: the comparison's time tells nothing, not even the secret's length.
    given = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, hashlib.sha256(secret.encode()).digest()):
        raise HttpError(401, "unauthorized", headers={"WWW-Authenticate": 'Bearer realm="strategy-engine"'})


def _body(req: HttpRequest, required: bool) -> bytes:
    declared = req.headers.get("content-length", "").strip()
    if len(req.body) > MAX_BODY_BYTES or (declared.isdigit() and int(declared) > MAX_BODY_BYTES):
        raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    if not req.body.strip():
        if required:
            raise HttpError.invalid("body", "a JSON body is required")
        return b""
    media, _, params = req.headers.get("content-type", "").partition(";")
    charset = params.partition("charset=")[2].strip().strip('"').lower()
    encoding = req.headers.get("content-encoding", "identity").strip().lower()
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8", "utf8"):
        raise HttpError(415, "content type must be application/json (UTF-8)")
    if encoding not in ("", "identity"):
        raise HttpError(415, f"content encoding {encoding!r} not supported")
    return req.body


def _minute(text: str, field_name: str, later: timedelta = timedelta(0)) -> datetime:
    """T (the time's minute + `later`) from an ISO 8601 time with an offset."""
    try:
        t = calendar.parse_minute(text) + later
    except (InputError, OverflowError, ValueError) as exc:
        message = str(exc) if isinstance(exc, InputError) else f"time {text!r} out of range"
        raise HttpError.invalid(field_name, message) from None
    return t


# ---- the handlers ------------------------------------------------------------------------------


def run_tick(
    services: Services, minute: datetime, trigger: str, only: str | None = None, *, field: str = "minute"
) -> HttpResponse:
    """One engine tick on the services' clock. A strategy failed on an outage, or a deadline hit, is
    503 so the scheduler retries minute T (the retry redoes only what is left); a failure a retry
    would repeat is 200; a minute too far ahead is 400 naming `field` (the refusal is recorded)."""
    deps = dataclasses.replace(services.deps(), clock=services.clock)
    with services.open_session() as s:
        try:
            result = engine.tick(s, minute, trigger=trigger, only=only, deps=deps)
        except invocation.MinuteRefused as exc:
            raise HttpError.invalid(field, str(exc)) from None
    doc = result.as_json()
    retry = result.retryable or result.status == "deadline"
    return retry_later(doc) if retry else HttpResponse(200, doc)


def _tick(req: HttpRequest, body: bytes, services: Services) -> HttpResponse:
    """T from X-CloudScheduler-ScheduleTime (constant across the job's retries), else the body's
    `minute`, else the current minute."""
    parsed = validate(TickBody, body) if body else TickBody()
    header = req.headers.get(SCHEDULE_TIME_HEADER)
    if header is not None:
        field, trigger = "X-CloudScheduler-ScheduleTime", "cloud_scheduler"
        minute = _minute(header, field)
    elif parsed.minute is not None:
        minute, trigger, field = _minute(parsed.minute, "minute"), "http", "minute"
    else:
        minute, trigger, field = calendar.floor_minute(services.clock()), "http", "minute"
    return run_tick(services, minute, trigger, parsed.strategy, field=field)


def _webhook(req: HttpRequest, body: bytes, services: Services) -> HttpResponse:
    """An INSERT into market_data_1m ticks the bar's minute + 1 (a bar's ts is its start)."""
    p = validate(WebhookPayload, body)
    if (p.type, p.schema_, p.table) != ("INSERT", "public", "market_data_1m"):
        return HttpResponse(200, {"status": "ignored", "reason": f"{p.type} on {p.schema_}.{p.table}"})
    if p.record is None:
        raise HttpError.invalid("record", "required for an INSERT")
    bar = validate(BarRecord, p.record, prefix="record")
    t, now = _minute(bar.ts, "record.ts", later=timedelta(minutes=1)), services.clock()
    if t > now + CLOCK_SKEW:  # a bar inserted before its minute ended: the scheduler ticks T
        return HttpResponse(200, {"status": "ignored", "reason": f"bar {bar.symbol} {bar.ts} still forming"})
    if now - t > WEBHOOK_MAX_LAG:
        return HttpResponse(200, {"status": "ignored", "reason": f"stale bar {bar.symbol} {bar.ts}"})
    return run_tick(services, t, "webhook")


def _backfill(req: HttpRequest, body: bytes, services: Services) -> HttpResponse:
    from strategy_engine.backtest import backfill

    request = validate(_backfill_model(), body)
    with services.open_session() as s:
        summary = backfill.run_backfill(s, request)
    return HttpResponse(200, dict(summary))


@cache
def _backfill_model() -> type[BackfillRequest]:
    """The backfill's own request model, held to the HTTP boundary's rules (no unknown field, no
    coercion, no NaN); imported on first use so a tick's cold start does not pay for it."""
    from strategy_engine.backtest.backfill import BackfillRequest

    class HttpBackfillRequest(BackfillRequest):
        model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

        @field_validator("report_path")
        @classmethod
        def _no_server_path(cls, v: str | None) -> str | None:
            if v is not None:
                raise ValueError("not accepted over HTTP: the server decides where its files go")
            return v

    return HttpBackfillRequest


Handler = Callable[[HttpRequest, bytes, Services], HttpResponse]
#: route -> (method, body required, handler)
ROUTES: dict[str, tuple[str, bool, Handler]] = {
    "tick": ("POST", False, _tick),
    "backfill": ("POST", True, _backfill),
    "webhook": ("POST", True, _webhook),
    "health": ("GET", False, health.liveness),
    "ready": ("GET", False, health.readiness),
}
PUBLIC_ROUTES = frozenset({"health"})  # answered without credentials (and without any detail)
