"""The `tick` target through functions-framework's own Flask app: every status it can answer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from strategy_engine.engine import Deps
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import seed
from tests.http_support import (
    AUTH,
    BROKER_DOWN,
    JSON_AUTH,
    closed_port_url,
    configure,
    counts,
    ff_app,
    fixed_clock,
    serve_app,
)
from tests.test_exactly_once import SYMS, T, entry_setup

SCHEDULE = "X-CloudScheduler-ScheduleTime"
T_NEW_YORK = "2025-06-13T11:00:00-04:00"  # T as Cloud Scheduler sends it for a job in New York time


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    """A migrated database with one strategy that enters long on every symbol at T."""
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    configure(monkeypatch, db_url)
    yield ff_app("tick").test_client()
    get_settings.cache_clear()


def _post(client: FlaskClient, **kw: Any) -> tuple[int, dict[str, Any]]:
    r = client.post("/", **kw)
    return r.status_code, r.get_json()


def test_schedule_header_with_offset_then_ticks_t_and_replay_does_no_second_work(
    client: FlaskClient, db_url: str
) -> None:
    status, doc = _post(client, headers={**JSON_AUTH, SCHEDULE: T_NEW_YORK}, data="{}")
    assert status == 200 and doc["minute"] == T.isoformat() and doc["trigger"] == "cloud_scheduler"
    assert doc["orders"] == 3 and doc["strategies"][0]["outcome"] == "processed"
    after_first = counts(db_url)
    status, again = _post(client, headers={**JSON_AUTH, SCHEDULE: "2025-06-13T15:00:00Z"}, data="{}")
    assert status == 200 and again["strategies"][0]["outcome"] == "already_processed"
    after_second = counts(db_url)
    assert after_second["strategy_logs"] == after_first["strategy_logs"] == 3
    assert after_second["paper_trades"] == after_first["paper_trades"] == 3
    assert after_second["engine_runs"] == after_first["engine_runs"] + 1  # the replay is recorded


def test_body_minute_then_ticks_it(client: FlaskClient) -> None:
    status, doc = _post(client, headers=AUTH, json={"minute": "2025-06-13T15:00:42Z", "strategy": "nft"})
    assert status == 200 and doc["minute"] == T.isoformat() and doc["trigger"] == "http"


def test_header_wins_over_body(client: FlaskClient) -> None:
    status, doc = _post(
        client, headers={**AUTH, SCHEDULE: T_NEW_YORK}, json={"minute": "2025-06-13T16:00:00Z"}
    )
    assert status == 200 and doc["minute"] == T.isoformat()


def test_no_minute_then_the_current_minute(db_url: str, client: FlaskClient) -> None:
    app = serve_app(db_url, clock=fixed_clock(T + timedelta(seconds=37)))
    r = app.test_client().post("/tick", headers=AUTH)
    assert r.status_code == 200 and r.get_json()["minute"] == T.isoformat()


def test_weekend_then_market_closed_200(client: FlaskClient, db_url: str) -> None:
    status, doc = _post(client, headers={**AUTH, SCHEDULE: "2025-06-14T15:00:00Z"})
    assert status == 200 and doc["status"] == "market_closed"
    assert counts(db_url)["strategy_logs"] == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic dGVzdDp0ZXN0"}, 401),
        ({"Authorization": f"bearer {AUTH['Authorization'].split()[1]}x"}, 401),
    ],
)
def test_bad_credentials_then_401_and_nothing_written(
    client: FlaskClient, db_url: str, headers: dict[str, str], status: int
) -> None:
    before = counts(db_url)
    r = client.post("/", headers={**headers, SCHEDULE: T_NEW_YORK})
    assert r.status_code == status and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert counts(db_url) == before


def test_bearer_scheme_is_case_insensitive(client: FlaskClient) -> None:
    token = AUTH["Authorization"].split()[1]
    assert (
        client.post("/", headers={"Authorization": f"bearer {token}", SCHEDULE: T_NEW_YORK}).status_code
        == 200
    )


def test_nothing_configured_then_fails_closed_403(
    client: FlaskClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, db_url, secret=None, trust=False)
    before = counts(db_url)
    r = client.post("/", headers={**AUTH, SCHEDULE: T_NEW_YORK})
    assert r.status_code == 403 and "no ENGINE_HTTP_SECRET" in r.get_json()["error"]
    assert counts(db_url) == before


def test_short_secret_then_fails_closed_403(
    client: FlaskClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, db_url, secret="short-secret")
    r = client.post("/", headers={"Authorization": "Bearer short-secret", SCHEDULE: T_NEW_YORK})
    assert r.status_code == 403 and "16+ characters" in r.get_json()["error"]


def test_platform_auth_trusted_then_no_bearer_needed(
    client: FlaskClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, db_url, secret=None, trust=True)
    r = client.post("/", headers={"Authorization": "Bearer <google-oidc-token>", SCHEDULE: T_NEW_YORK})
    assert r.status_code == 200 and r.get_json()["orders"] == 3


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"json": {"minute": "2025-06-13T15:00:00Z", "extra": 1}}, 400, "extra"),
        ({"json": {"minute": 1749826800}}, 400, "minute"),
        ({"json": {"minute": "2025-06-13T15:00:00"}}, 400, "minute"),  # no offset
        ({"json": {"minute": "yesterday"}}, 400, "minute"),
        ({"json": {"minute": "0001-01-01T00:00:00+14:00"}}, 400, "minute"),  # overflows UTC
        ({"json": {"strategy": 7}}, 400, "strategy"),
        ({"json": {"strategy": ""}}, 400, "strategy"),
        ({"json": ["2025-06-13T15:00:00Z"]}, 400, "body"),
        ({"data": "{nope", "content_type": "application/json"}, 400, "body"),
        ({"data": b"\xff\xfe", "content_type": "application/json"}, 400, "body"),
        ({"headers": {SCHEDULE: "Fri, 13 Jun 2025 15:00:00 GMT"}}, 400, SCHEDULE),
        ({"headers": {SCHEDULE: ""}}, 400, SCHEDULE),
    ],
)
def test_bad_input_then_400_naming_the_field_and_nothing_written(
    client: FlaskClient, db_url: str, kwargs: dict[str, Any], status: int, field: str
) -> None:
    before = counts(db_url)
    headers = {**AUTH, **kwargs.pop("headers", {})}
    code, doc = _post(client, headers=headers, **kwargs)
    assert code == status, doc
    assert doc["fields"][0]["field"] == field and doc["error"].startswith(field)
    assert "Traceback" not in str(doc) and set(doc) == {"error", "fields", "request_id"}
    assert counts(db_url) == before


def test_outside_the_calendar_then_400_and_nothing_written(client: FlaskClient, db_url: str) -> None:
    before = counts(db_url)
    status, doc = _post(client, headers=AUTH, json={"minute": "2010-01-04T15:00:00Z"})
    assert status == 400 and "outside the NYSE calendar" in doc["error"]
    assert counts(db_url) == before


def test_unknown_strategy_then_404_and_nothing_written(client: FlaskClient, db_url: str) -> None:
    before = counts(db_url)
    status, doc = _post(client, headers=AUTH, json={"minute": T.isoformat(), "strategy": "nope"})
    assert status == 404 and "unknown strategy 'nope'" in doc["error"]
    assert counts(db_url) == before


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_wrong_method_then_405_with_allow(client: FlaskClient, method: str) -> None:
    r = client.open("/", method=method, headers=AUTH)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json; charset=latin-1"},
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        {},
    ],
)
def test_wrong_content_type_then_415(client: FlaskClient, db_url: str, headers: dict[str, str]) -> None:
    before = counts(db_url)
    r = client.post("/", headers={**AUTH, **headers}, data='{"minute": "2025-06-13T15:00:00Z"}')
    assert r.status_code == 415
    assert counts(db_url) == before


def test_json_with_utf8_charset_accepted(client: FlaskClient) -> None:
    r = client.post(
        "/",
        headers={**AUTH, "Content-Type": "application/json; charset=UTF-8"},
        data='{"minute": "2025-06-13T15:00:00Z"}',
    )
    assert r.status_code == 200


def test_oversized_body_then_413(client: FlaskClient, db_url: str) -> None:
    before = counts(db_url)
    body = '{"minute": "2025-06-13T15:00:00Z", "pad": "' + "x" * (64 * 1024) + '"}'
    r = client.post("/", headers=JSON_AUTH, data=body)
    assert r.status_code == 413
    assert counts(db_url) == before


def test_database_down_then_503_with_retry_after(
    client: FlaskClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, closed_port_url())
    r = client.post("/", headers={**AUTH, SCHEDULE: T_NEW_YORK})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert "database unavailable" in r.get_json()["error"]


@pytest.mark.parametrize(
    "url", [None, "mysql://engine:hunter2-pw@db.example/x", "postgresql://engine:hunter2-pw@[db/x"]
)
def test_database_url_missing_or_invalid_then_500_without_detail(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, url: str | None
) -> None:
    """The server's misconfiguration, not the caller's input: no 4xx, no detail, no URL."""
    configure(monkeypatch, url)
    r = client.post("/", headers={**AUTH, SCHEDULE: T_NEW_YORK})
    assert r.status_code == 500 and r.get_json()["error"] == "internal error"
    assert set(r.get_json()) == {"error", "request_id"} and "hunter2" not in r.get_data(as_text=True)


def test_broker_down_then_503_nothing_for_the_minute_and_the_retry_trades(
    client: FlaskClient, db_url: str
) -> None:
    before = counts(db_url)
    down = serve_app(db_url, deps=lambda: BROKER_DOWN).test_client()
    r = down.post("/tick", headers={**AUTH, SCHEDULE: T_NEW_YORK})
    assert r.status_code == 503 and r.headers["Retry-After"]
    doc = r.get_json()
    assert doc["status"] == "failed" and doc["strategies"][0]["outcome"] == "failed"
    after = counts(db_url)
    assert after["engine_runs"] == before["engine_runs"] + 1  # the failed run is on record
    for table in ("strategy_logs", "paper_trades"):
        assert after[table] == before[table], table
    with connect(db_url) as s:  # the day's row is made before any claim; the minute left no mark on it
        assert s.fetchall(
            "select trades_today, notional_today::float8, last_run_minute, last_trade_at from strategy_state"
        ) == [(0, 0.0, None, None)]
    retry = client.post("/", headers={**AUTH, SCHEDULE: T_NEW_YORK})  # Cloud Scheduler's retry: same T
    assert retry.status_code == 200 and retry.get_json()["orders"] == 3


def test_unexpected_error_then_500_with_request_id_only(client: FlaskClient, db_url: str) -> None:
    def explode() -> Any:
        raise RuntimeError("an internal detail the caller must not see")

    app = serve_app(db_url, deps=explode)
    r = app.test_client().post("/tick", headers={**AUTH, SCHEDULE: T_NEW_YORK})
    doc = r.get_json()
    assert r.status_code == 500 and set(doc) == {"error", "request_id"} and doc["error"] == "internal error"
    assert "internal detail" not in r.get_data(as_text=True)


def test_every_response_is_json_with_a_request_id(client: FlaskClient) -> None:
    for r in (
        client.post("/"),
        client.get("/", headers=AUTH),
        client.post("/", headers={**AUTH, SCHEDULE: "x"}),
    ):
        assert r.mimetype == "application/json" and len(r.get_json()["request_id"]) == 32


def test_future_tolerance_is_a_few_seconds_of_clock_skew(db_url: str, client: FlaskClient) -> None:
    """A minute 4 s ahead is waited for (slept until); the next minute is refused with a record."""
    now = datetime(2025, 6, 13, 14, 59, 56, tzinfo=UTC)
    slept: list[float] = []
    app = serve_app(db_url, clock=fixed_clock(now), deps=lambda: Deps(sleep=slept.append)).test_client()
    assert app.post("/tick", headers={**AUTH, SCHEDULE: T_NEW_YORK}).status_code == 200
    assert slept == [4.0]
    later = app.post("/tick", headers={**AUTH, SCHEDULE: "2025-06-13T15:01:00Z"})
    doc = later.get_json()
    assert later.status_code == 400 and doc["fields"][0]["field"] == SCHEDULE
    assert "64.0s ahead of the host clock" in doc["error"] and slept == [4.0]
    with connect(db_url) as s:
        assert s.fetchall("select minute, status from engine_runs order by started_at") == [
            (T, "ok"),
            (T + timedelta(minutes=1), "refused"),
        ]
