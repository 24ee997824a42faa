"""Structured logs of the entry points: one JSON object per line, a request line per request, the
engine's run and order lines tied to it by request id, and no secret in any line."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from strategy_engine import logs
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import seed
from tests.http_support import (
    AUTH,
    BROKER_DOWN,
    JSON_AUTH,
    SECRET,
    closed_port_url,
    configure,
    ff_app,
    serve_app,
)
from tests.test_exactly_once import SYMS, T, entry_setup

SCHEDULE = {"X-CloudScheduler-ScheduleTime": T.isoformat()}
OTHER_SECRETS = {
    "ALPACA_API_KEY": "PKLOGTEST0123456789AB",
    "ALPACA_SECRET_KEY": "alpaca-secret-for-log-test-9f8e7d6c5b4a",
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-log-test-0a1b2c3d4e5f",
}
DB_PASSWORD = "db-pass-log-test-5e6f7a8b"


def _lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _json_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    logs.configure()
    for name, value in OTHER_SECRETS.items():
        monkeypatch.setenv(name, value)


def test_secrets_never_appear_in_any_line(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    configure(monkeypatch, db_url)
    tick = ff_app("tick").test_client()
    assert tick.post("/", headers={**AUTH, **SCHEDULE}).status_code == 200
    assert tick.post("/", headers={"Authorization": f"Bearer {SECRET}-not"}).status_code == 401
    assert tick.post("/", headers=JSON_AUTH, data='{"minute": "' + SECRET + '"}').status_code == 400
    assert tick.post("/", headers=AUTH, data=SECRET, content_type="text/plain").status_code == 415
    assert tick.get("/", headers=AUTH).status_code == 405

    def leak() -> Any:
        raise RuntimeError(f"failure quoting {SECRET} and {OTHER_SECRETS['ALPACA_SECRET_KEY']}")

    crash = serve_app(db_url, deps=leak).test_client()
    assert crash.post("/tick", headers={**AUTH, **SCHEDULE}).status_code == 500
    configure(monkeypatch, closed_port_url(password=DB_PASSWORD))
    assert tick.post("/", headers={**AUTH, **SCHEDULE}).status_code == 503
    assert ff_app("ready").test_client().get("/", headers=AUTH).status_code == 503

    err = capsys.readouterr().err
    for secret in [SECRET, DB_PASSWORD, *OTHER_SECRETS.values()]:
        assert secret not in err
    lines = _lines(err)
    crashed = [x for x in lines if x["message"] == "unexpected error"]
    assert crashed and "RuntimeError" in crashed[0]["stack_trace"] and logs.MASK in crashed[0]["stack_trace"]


def test_a_request_line_per_request_and_engine_lines_carry_its_id(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    configure(monkeypatch, db_url)
    tick = ff_app("tick").test_client()
    ok = tick.post("/", headers={**AUTH, **SCHEDULE}).get_json()
    tick.post("/", headers={"Authorization": "Bearer nope"})
    lines = _lines(capsys.readouterr().err)
    assert all({"severity", "time", "message", "logger"} <= set(x) for x in lines)
    requests = [x for x in lines if x["message"] == "request"]
    assert [(x["status"], x["severity"], x["method"], x["route"]) for x in requests] == [
        (200, "INFO", "POST", "tick"),
        (401, "WARNING", "POST", "tick"),
    ]
    assert requests[0]["run_id"] == ok["run_id"] and requests[0]["outcome"] == "ok"
    assert isinstance(requests[0]["latency_ms"], float) and requests[0]["path"] == "/"
    rid = ok["request_id"]
    run = [x for x in lines if x["message"] == "tick"]
    orders = [x for x in lines if x["message"] == "order"]
    assert len(run) == 1 and run[0]["request_id"] == rid and run[0]["outcome"] == "ok"
    assert run[0]["minute"] == T.isoformat() and run[0]["run_id"] == ok["run_id"]
    assert len(orders) == 3 and all(o["request_id"] == rid and o["strategy"] == "nft" for o in orders)
    assert {o["run_id"] for o in orders} == {ok["run_id"]}  # an order's line names its engine_runs row
    assert {o["outcome"] for o in orders} == {"ordered"} and {o["minute"] for o in orders} == {T.isoformat()}
    with connect(db_url) as s:  # each line says which order it was, as the journal has it
        journal = s.fetchall(
            "select symbol, side, qty::float8, client_order_id from paper_trades order by symbol"
        )
    assert sorted((o["symbol"], o["side"], o["qty"], o["client_order_id"]) for o in orders) == journal
    assert [(o["risk_code"], o["error"]) for o in orders] == [(None, None)] * 3
    assert requests[1]["request_id"] != rid


def test_a_failed_run_logs_at_error(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
    configure(monkeypatch, db_url)
    serve_app(db_url, deps=lambda: BROKER_DOWN).test_client().post("/tick", headers={**AUTH, **SCHEDULE})
    lines = _lines(capsys.readouterr().err)
    by_message = {x["message"]: x for x in lines}
    assert by_message["strategy failed"]["severity"] == "ERROR"
    assert by_message["strategy failed"]["strategy"] == "nft"
    assert by_message["tick"]["outcome"] == "failed" and by_message["request"]["status"] == 503
    assert by_message["request"]["severity"] == "ERROR"


def test_redaction_masks_json_escaped_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    odd = 'se"cr\\et-é'
    logs.redact([odd, "abc"])  # too short to be a secret: left alone rather than mangling every line
    try:
        logs.event("x", level=logging.WARNING, detail=f"value {odd} abc")
    finally:
        logs.redact(())
        get_settings.cache_clear()
    line = capsys.readouterr().err
    assert json.loads(line)["detail"] == f"value {logs.MASK} abc"
