"""Shared helpers of the HTTP and Lambda entry-point tests (plain functions, no fixtures)."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

import flask
import functions_framework
import pytest

from strategy_engine.brokers.base import Broker
from strategy_engine.core.errors import BrokerUnavailable
from strategy_engine.core.models import Account, Position
from strategy_engine.engine import Deps
from strategy_engine.http import api, serve
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import REPO

SECRET = "test-bearer-7f3c9a51d2e84b06"
AUTH = {"Authorization": f"Bearer {SECRET}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
TABLES = ("engine_runs", "strategy_logs", "paper_trades", "strategy_state", "backfill_runs")
_FF_ENV = ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE", "FUNCTION_TRIGGER_TYPE")


def configure(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str | None,
    *,
    secret: str | None = SECRET,
    trust: bool = False,
) -> None:
    """The environment a deployed function reads, and a fresh settings cache."""
    for name in ("DATABASE_URL", "ENGINE_HTTP_SECRET", "ENGINE_TRUST_PLATFORM_AUTH", "ENGINE_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    if database_url is not None:
        monkeypatch.setenv("DATABASE_URL", database_url)
    if secret is not None:
        monkeypatch.setenv("ENGINE_HTTP_SECRET", secret)
    monkeypatch.setenv("ENGINE_TRUST_PLATFORM_AUTH", "true" if trust else "false")
    get_settings.cache_clear()


@cache
def ff_app(target: str) -> flask.Flask:
    """functions-framework's own app for a target of functions/main.py, as Cloud Functions runs it
    (built once per target: create_app appends to sys.path and sets environment variables)."""
    saved = {k: os.environ.get(k) for k in _FF_ENV}
    try:
        app: flask.Flask = functions_framework.create_app(target, str(REPO / "functions" / "main.py"))  # type: ignore[no-untyped-call]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return app


def serve_app(database_url: str, **changes: Any) -> flask.Flask:
    """The `serve` app with the services of these settings, some swapped (deps, clock)."""
    return serve.build_app(dataclasses.replace(api.Services.from_settings(database_url), **changes))


def fixed_clock(t: datetime) -> Callable[[], datetime]:
    return lambda: t


def broker_down(acct: Account, positions: list[Position], minute: datetime, slippage: float) -> Broker:
    raise BrokerUnavailable("simulated broker outage")


BROKER_DOWN = Deps(simulated_broker=broker_down)


def counts(db_url: str) -> dict[str, int]:
    with connect(db_url) as s:
        row = s.fetchone("select " + ", ".join(f"(select count(*) from {t})" for t in TABLES))
    assert row is not None
    return dict(zip(TABLES, (int(x) for x in row), strict=True))


def closed_port_url(password: str = "pw") -> str:  # noqa: S107 - a URL to a closed port
    """A Postgres URL nothing listens on: connecting fails at once with 'connection refused'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"postgresql://engine:{password}@127.0.0.1:{port}/engine?connect_timeout=2"
