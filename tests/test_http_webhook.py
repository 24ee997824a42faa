"""The `webhook` target: Supabase database webhooks on market_data_1m inserts tick bar + 1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import seed
from tests.http_support import AUTH, JSON_AUTH, configure, counts, ff_app, fixed_clock, serve_app
from tests.test_exactly_once import SYMS, T, entry_setup

BAR = T - timedelta(minutes=1)  # the bar that completes the window of decision minute T


def payload(**changes: Any) -> dict[str, Any]:
    """What supabase_functions.http_request sends for an INSERT (jsonb_build_object of the row)."""
    record = {
        "symbol": "SPY",
        "ts": BAR.isoformat(),  # to_json(timestamptz): '2025-06-13T14:59:00+00:00'
        "open": 100.0,
        "high": 100.5,
        "low": 99.5,
        "close": 100.2,
        "volume": 1200,
    }
    row = {
        "type": "INSERT",
        "table": "market_data_1m",
        "schema": "public",
        "record": record,
        "old_record": None,
    }
    return row | changes


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    configure(monkeypatch, db_url)
    yield db_url
    get_settings.cache_clear()


@pytest.fixture
def live(db: str) -> FlaskClient:
    """The serve app with the clock at T + 5 s: the bar has just landed."""
    return serve_app(db, clock=fixed_clock(T + timedelta(seconds=5))).test_client()


def test_insert_then_ticks_the_bar_minute_plus_one(live: FlaskClient, db: str) -> None:
    r = live.post("/webhook", headers=AUTH, json=payload())
    doc = r.get_json()
    assert r.status_code == 200 and doc["minute"] == T.isoformat() and doc["trigger"] == "webhook"
    assert doc["orders"] == 3
    # the other symbols' inserts of the same minute: already processed, no second order
    again = live.post("/webhook", headers=AUTH, json=payload(record={"symbol": "QQQ", "ts": BAR.isoformat()}))
    assert again.status_code == 200 and again.get_json()["strategies"][0]["outcome"] == "already_processed"
    assert counts(db)["paper_trades"] == 3


def test_bar_ts_with_offset_and_seconds_then_floored(live: FlaskClient) -> None:
    r = live.post(
        "/webhook", headers=AUTH, json=payload(record={"symbol": "SPY", "ts": "2025-06-13T10:59:30-04:00"})
    )
    assert r.status_code == 200 and r.get_json()["minute"] == T.isoformat()


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "UPDATE", "old_record": {"symbol": "SPY", "ts": BAR.isoformat()}},
        {"type": "DELETE", "record": None, "old_record": {"symbol": "SPY", "ts": BAR.isoformat()}},
        {"table": "options_flow"},
        {"schema": "archive"},
    ],
)
def test_other_events_then_acknowledged_and_ignored(
    live: FlaskClient, db: str, changes: dict[str, Any]
) -> None:
    before = counts(db)
    r = live.post("/webhook", headers=AUTH, json=payload(**changes))
    assert r.status_code == 200 and r.get_json()["status"] == "ignored"
    assert counts(db) == before


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (T + timedelta(minutes=10), "stale"),  # a data backfill inserting old bars: no live replay
        (T - timedelta(seconds=30), "still forming"),  # the bar's minute is not over yet
        (T + timedelta(days=400), "stale"),
    ],
)
def test_stale_or_forming_bar_then_ignored_not_ticked(db: str, now: datetime, reason: str) -> None:
    client = serve_app(db, clock=fixed_clock(now)).test_client()
    before = counts(db)
    r = client.post("/webhook", headers=AUTH, json=payload())
    assert r.status_code == 200 and r.get_json()["status"] == "ignored"
    assert reason in r.get_json()["reason"] and counts(db) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "INSERT", "table": "market_data_1m"}, "schema"),
        (payload(record=None), "record"),
        (payload(record={"symbol": "SPY"}), "record.ts"),
        (payload(record={"symbol": "SPY", "ts": 1749826740}), "record.ts"),
        (payload(record={"symbol": "SPY", "ts": "2025-06-13T14:59:00"}), "record.ts"),
        (payload(record={"symbol": "SPY", "ts": "0001-01-01T00:00:00+14:00"}), "record.ts"),
        (payload(record="SPY"), "record"),
        (payload(type=1), "type"),
        (payload(extra=True), "extra"),
        ([payload()], "body"),
    ],
)
def test_malformed_payload_then_400_naming_the_field(
    live: FlaskClient, db: str, body: Any, field: str
) -> None:
    before = counts(db)
    r = live.post("/webhook", headers=AUTH, json=body)
    assert r.status_code == 400 and r.get_json()["fields"][0]["field"] == field, r.get_json()
    assert counts(db) == before


def test_functions_framework_target_refuses_and_acknowledges(db: str) -> None:
    client = ff_app("webhook").test_client()
    assert client.post("/", json=payload()).status_code == 401
    assert client.get("/", headers=AUTH).status_code == 405
    assert client.post("/", headers=AUTH, data="x", content_type="text/plain").status_code == 415
    assert client.post("/", headers=JSON_AUTH, data="").status_code == 400  # a body is required
    big = {"pad": "x" * (64 * 1024)}
    assert client.post("/", headers=AUTH, json=big).status_code == 413
    ignored = client.post("/", headers=AUTH, json=payload(table="orders"))
    assert ignored.status_code == 200 and ignored.get_json()["status"] == "ignored"
    # with the real clock the 2025 bar is stale: acknowledged, nothing ticked
    stale = client.post("/", headers=AUTH, json=payload())
    assert stale.status_code == 200 and stale.get_json()["status"] == "ignored"
