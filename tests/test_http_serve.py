"""`strategy-engine serve`: the four routes on one local app, and the command that runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flask
import pytest
import typer
from typer.testing import CliRunner

from strategy_engine.http import serve
from strategy_engine.settings import get_settings
from tests.http_support import AUTH, JSON_AUTH, configure, serve_app


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    configure(monkeypatch, db_url)
    yield db_url
    get_settings.cache_clear()


def test_routes_reach_the_same_handlers(db: str) -> None:
    client = serve_app(db).test_client()
    assert client.get("/health", headers=AUTH).status_code == 200
    assert client.get("/health/", headers=AUTH).status_code == 200
    tick = client.post("/tick", headers=AUTH, json={"minute": "2025-06-14T15:00:00Z"})
    assert tick.status_code == 200 and tick.get_json()["status"] == "market_closed"
    webhook = client.post(
        "/webhook",
        headers=AUTH,
        json={"type": "INSERT", "table": "t", "schema": "public", "record": {}, "old_record": None},
    )
    assert webhook.status_code == 200 and webhook.get_json()["status"] == "ignored"
    assert client.get("/backfill", headers=AUTH).status_code == 405
    assert client.post("/tick", headers=JSON_AUTH, data="{").status_code == 400


@pytest.mark.parametrize("path", ["/", "/nope", "/tick/extra", "/favicon.ico"])
def test_unknown_path_then_404_json(db: str, path: str) -> None:
    r = serve_app(db).test_client().get(path, headers=AUTH)
    assert (
        r.status_code == 404 and r.mimetype == "application/json" and "no such route" in r.get_json()["error"]
    )


def test_options_and_head_are_not_special(db: str) -> None:
    client = serve_app(db).test_client()
    assert client.options("/tick", headers=AUTH).status_code == 405
    assert client.head("/health", headers=AUTH).status_code == 405


def test_register_adds_serve_and_runs_the_app(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: dict[str, Any] = {}

    def fake_run(app: flask.Flask, host: str, port: int) -> None:
        ran.update(app=app, host=host, port=port)

    monkeypatch.setattr(serve, "_run", fake_run)
    cli = typer.Typer()
    serve.register(cli)

    @cli.command()
    def other() -> None:  # a second command, so typer keeps `serve` as a subcommand
        """Unused."""

    result = CliRunner().invoke(cli, ["serve", "--database-url", db])
    assert result.exit_code == 0, result.output
    assert (ran["host"], ran["port"]) == ("127.0.0.1", 8080)
    assert ran["app"].test_client().get("/health", headers=AUTH).status_code == 200
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "9000", "--database-url", db])
    assert result.exit_code == 0 and (ran["host"], ran["port"]) == ("0.0.0.0", 9000)


def test_serve_without_a_secret_warns(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, db, secret=None)
    monkeypatch.setattr(serve, "_run", lambda app, host, port: None)
    cli = typer.Typer()
    serve.register(cli)
    cli.command()(lambda: None)
    result = CliRunner().invoke(cli, ["serve", "--database-url", db])
    assert result.exit_code == 0 and "no ENGINE_HTTP_SECRET" in result.output
