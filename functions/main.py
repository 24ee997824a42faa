"""functions-framework HTTP targets: `tick`, `backfill`, `webhook`, `health`, `ready`.

Each target only adapts Flask's request to `strategy_engine.http_api` and renders its answer;
authentication, validation, the engine call and the status codes all live there, shared with the
Lambda handler and `strategy-engine serve`. Each target is deployed as its own function, so the
path does not route: the target does.

Run one locally: functions-framework --target tick --source functions/main.py --port 8080
(or all of them at once: strategy-engine serve). In the deployed bundle the package
`strategy_engine` sits at the source root next to `functions/`; in the repository it is installed.
"""

from __future__ import annotations

import flask
import functions_framework

from strategy_engine import logs
from strategy_engine.http import api

logs.configure()


def _serve(route: str, request: flask.Request) -> flask.Response:
    return api.to_flask(api.handle(route, api.from_flask(request)))


@functions_framework.http
def tick(request: flask.Request) -> flask.Response:
    """One engine tick for X-CloudScheduler-ScheduleTime, else the body's minute, else now."""
    return _serve("tick", request)


@functions_framework.http
def backfill(request: flask.Request) -> flask.Response:
    """Replay a range through the same core: {strategy, start, end, ...} -> summary JSON."""
    return _serve("backfill", request)


@functions_framework.http
def webhook(request: flask.Request) -> flask.Response:
    """Supabase database webhook: an INSERT into market_data_1m ticks the bar's minute + 1."""
    return _serve("webhook", request)


@functions_framework.http
def health(request: flask.Request) -> flask.Response:
    """Liveness (GET, no credentials, no detail): an uptime probe's target."""
    return _serve("health", request)


@functions_framework.http
def ready(request: flask.Request) -> flask.Response:
    """Readiness (GET, authenticated): database and broker reachability, 503 when not ready."""
    return _serve("ready", request)
