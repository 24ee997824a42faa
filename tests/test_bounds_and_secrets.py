"""Bounded requests (control characters, the backfill budget) and secrets in every output."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from strategy_engine.backtest import synthetic
from strategy_engine.http import serve
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from strategy_engine.store.redaction import redact_text, redact_url
from tests.conftest import DAY, REPO, load_market, seed
from tests.http_support import AUTH, SECRET, configure, counts, ff_app, serve_app

START, END = "2025-06-13T09:30:00-04:00", "2025-06-13T12:00:00-04:00"
CONTROL = ["\u0000", "\u0007", "\n", "\u001b[31m", "\u007f", "\u0085"]
PASSWORD = "hunter2-Very-Secret"
TOKEN = "tok-9a8b7c6d5e4f"
CLI = [sys.executable, "-m", "strategy_engine.cli"]


@pytest.fixture
def market_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with connect(db_url) as s:
        seed(s, config={"symbols": ["SPY", "QQQ"]})
        load_market(s, synthetic.MarketSpec(("SPY", "QQQ"), DAY, DAY, seed=3))
    configure(monkeypatch, db_url)
    yield db_url
    get_settings.cache_clear()


@pytest.mark.parametrize("char", CONTROL)
def test_control_characters_are_400_on_tick_and_backfill(market_db: str, char: str) -> None:
    tick: FlaskClient = ff_app("tick").test_client()
    back: FlaskClient = ff_app("backfill").test_client()
    r1 = tick.post("/", headers=AUTH, json={"strategy": f"nft{char}"})
    r2 = back.post("/", headers=AUTH, json={"strategy": f"n{char}ft", "start": START, "end": END})
    for r, name in ((r1, "strategy"), (r2, "strategy")):
        assert r.status_code == 400, r.get_json()
        assert r.get_json()["fields"][0]["field"] == name
        assert "control character" in r.get_json()["error"]
    assert counts(market_db) == dict.fromkeys(counts(market_db), 0)


@pytest.mark.parametrize("char", ["\u0001", "\u001b"])  # argv cannot carry NUL itself
def test_control_characters_are_exit_2_on_the_cli(market_db: str, char: str) -> None:
    for args in (
        ["run", "--strategy", f"nft{char}"],
        ["backfill", "--strategy", f"nft{char}", "--start", START, "--end", END],
    ):
        proc = subprocess.run(
            [*CLI, *args, "--database-url", market_db], capture_output=True, text=True, cwd=REPO, check=False
        )
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "control character" in proc.stderr


def test_a_backfill_over_the_budget_is_400_naming_the_limit(
    market_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_MAX_SYMBOL_MINUTES", "340")
    get_settings.cache_clear()
    back: FlaskClient = ff_app("backfill").test_client()
    r = back.post("/", headers=AUTH, json={"strategy": "nft", "start": START, "end": END, "report": False})
    # 2 symbols x (150 minutes (09:30-12:00) + 20 warm-up bars, the default sma_window) = 340 fits
    assert r.status_code == 200, r.get_json()
    r = back.post(
        "/",
        headers=AUTH,
        json={"strategy": "nft", "start": START, "end": "2025-06-13T12:01:00-04:00", "report": False},
    )
    assert r.status_code == 400
    assert r.get_json()["error"] == (
        "backfill of 2 symbols x (151 session minutes + 20 warm-up bars) = 342 exceeds the budget of"
        " 340 symbol-minutes (BACKFILL_MAX_SYMBOL_MINUTES): split the range or the symbols"
    )
    assert counts(market_db)["backfill_runs"] == 1  # the first one only


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://engine:{PASSWORD}@[::1/db",
        f"postgres://engine:{PASSWORD}@host:5x32/db",
        f'invalid URI query parameter: "postgresql://u:{PASSWORD}@h/db?bogus=1"',
        f"host=h password={PASSWORD} user=u",
        f"host=h password='{PASSWORD}' user=u",
    ],
)
def test_redaction_masks_the_password_in_any_spelling(text: str) -> None:
    assert PASSWORD not in redact_text(text)
    assert PASSWORD not in redact_url(text)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://engine:{PASSWORD}@[::1/db",
        f"postgresql://engine:{PASSWORD}@127.0.0.1:1/db?bogus=1",
        f"postgresql://engine:{PASSWORD}@127.0.0.1:1/db?connect_timeout=1",
        f"postgresql://engine:{PASSWORD}@127.0.0.1:99999/db",
        f"mysql://engine:{PASSWORD}@h/db",
    ],
)
def test_cli_never_prints_the_database_password(url: str) -> None:
    for args in (
        ["run"],
        ["status"],
        ["db", "migrate"],
        ["backfill", "--strategy", "x", "--start", START, "--end", END],
    ):
        proc = subprocess.run(
            [*CLI, *args, "--database-url", url], capture_output=True, text=True, cwd=REPO, check=False
        )
        assert proc.returncode in (2, 3), (args, proc.stderr)
        assert PASSWORD not in proc.stdout + proc.stderr, (args, proc.stderr)


def test_http_adapters_and_logs_never_carry_the_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://engine:{PASSWORD}@127.0.0.1:1/db?connect_timeout=1"
    configure(monkeypatch, url)
    from strategy_engine import logs

    logs.configure()
    outputs: list[str] = []
    for target, body in (
        ("tick", {}),
        ("backfill", {"strategy": "nft", "start": START, "end": END}),
        ("ready", None),  # /health touches no dependency; /ready reports the database
    ):
        client: FlaskClient = ff_app(target).test_client()
        r = client.post("/", headers=AUTH, json=body) if body is not None else client.get("/", headers=AUTH)
        assert r.status_code in (500, 503)
        outputs.append(r.get_data(as_text=True))
    captured = capsys.readouterr()
    everything = "".join(outputs) + captured.out + captured.err
    assert "request" in captured.err  # the request lines were logged
    assert PASSWORD not in everything and SECRET not in everything
    get_settings.cache_clear()


def test_serve_access_log_masks_every_query_value(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch, db_url)
    from strategy_engine import logs

    logs.configure()
    serve.mask_access_log()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("werkzeug")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    server = make_server("127.0.0.1", 0, serve_app(db_url))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Credential-looking names and names no list would know (sig, code, X-Amz-Credential).
    names = ("access_token", "apikey", "client_secret", "password", "sig", "code", "X-Amz-Credential", "ok")
    try:
        query = "&".join(f"{n}={TOKEN}{k}" for k, n in enumerate(names))
        r = requests.get(
            f"http://127.0.0.1:{server.server_port}/health?{query};x={TOKEN}", timeout=10, headers=AUTH
        )
        assert r.status_code == 200
    finally:
        server.shutdown()
        log.removeHandler(handler)
    line = stream.getvalue()
    masked = "&".join(f"{n}=***" for n in names)
    assert f"GET /health?{masked};x=*** HTTP/1.1" in line
    assert TOKEN not in line
    request_lines = [x for x in capsys.readouterr().err.splitlines() if '"message":"request"' in x]
    assert request_lines and '"path":"/health"' in request_lines[0]  # the JSON line: no query at all
    assert TOKEN not in "".join(request_lines)
