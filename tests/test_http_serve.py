"""`strategy-engine serve`: the four routes on one local app, and the command that runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
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


def test_options_is_not_special_and_head_is_get_without_a_body(db: str) -> None:
    client = serve_app(db).test_client()
    assert client.options("/tick", headers=AUTH).status_code == 405
    head = client.head("/health")  # an uptime probe: no credentials
    assert head.status_code == 200 and head.data == b""
    assert client.head("/tick", headers=AUTH).status_code == 405


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


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_the_embedded_postgres_it_started(tmp_path: Path, signum: int) -> None:
    """With nothing configured serve starts the embedded server; Ctrl-C or SIGTERM stops both."""
    data = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"EMBEDDED_DATA_DIR": str(data), "HOME": str(tmp_path), "ENGINE_HTTP_SECRET": "x" * 20}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with subprocess.Popen(
        [sys.executable, "-m", "strategy_engine.cli", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        # as a shell's background job starts it, SIGINT ignored: serve still stops on it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    ) as proc:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if line.startswith("serving"):
                    break
            postmaster = int((data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(postmaster, 0)  # running
            for _ in range(100):  # the listener comes up right after the line
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                        assert r.status == 200 and json.loads(r.read())["status"] == "ok"
                    break
                except urllib.error.URLError:
                    time.sleep(0.1)
            proc.send_signal(signum)
            assert proc.wait(timeout=60) == 0
            assert "stopped the embedded Postgres" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not (data / "postmaster.pid").exists()
    assert _gone(postmaster)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie no one has reaped yet counts as exited)."""
    import psutil  # type: ignore[import-untyped]

    for _ in range(100):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_a_dead_user_of_the_embedded_server_does_not_keep_it_running(tmp_path: Path) -> None:
    """A pid left in pgserver's list by a killed process is dropped at start, so the last live
    user's exit stops the server (before, the dead pid kept it running forever)."""
    from strategy_engine.store import embedded

    data = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"HOME": str(tmp_path)}
    script = "import sys,time; from strategy_engine.store import embedded; embedded.start(); print('up', flush=True); time.sleep(120)"
    with subprocess.Popen(
        [sys.executable, "-c", script],
        env=env | {"EMBEDDED_DATA_DIR": str(data)},
        stdout=subprocess.PIPE,
        text=True,
    ) as killed:
        assert killed.stdout is not None and killed.stdout.readline().strip() == "up"
        killed.kill()  # no cleanup: its pid stays in the list, the server keeps running
        killed.wait()
    assert json.loads((data / embedded.HANDLE_PIDS).read_text()) == [killed.pid]
    embedded.start(data)
    assert json.loads((data / embedded.HANDLE_PIDS).read_text()) == [os.getpid()]
    postmaster = int((data / "postmaster.pid").read_text().splitlines()[0])
    assert embedded.stop(data) is True
    assert _gone(postmaster)


_HOLDER = """
import time, typer
import strategy_engine.cli.app as cli
from strategy_engine.store import embedded
holder = typer.Typer()
@holder.command()
def hold() -> None:
    embedded.start()
    print("started", flush=True)
    time.sleep(120)
@holder.command()
def other() -> None:
    pass
cli.app = holder
cli.main()
"""


@pytest.mark.slow
def test_sigterm_while_a_command_holds_the_embedded_server_stops_it(tmp_path: Path) -> None:
    """The console script turns SIGTERM into an interrupt from the start (not only once `serve`
    listens): the command unwinds, pgserver's exit hook stops the server it started."""
    data = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"EMBEDDED_DATA_DIR": str(data), "HOME": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, "hold"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "started"
            postmaster = int((data / "postmaster.pid").read_text().splitlines()[0])
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
    assert _gone(postmaster)
    assert not (data / "postmaster.pid").exists()
