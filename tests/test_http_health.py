"""`health` (liveness: no credentials, no detail, no dependency) and `ready` (authenticated:
database and broker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from strategy_engine.settings import get_settings
from tests.http_support import AUTH, closed_port_url, configure, counts, ff_app


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    configure(monkeypatch, db_url)
    yield ff_app("ready").test_client()
    get_settings.cache_clear()


def test_health_answers_an_anonymous_probe_with_no_detail(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, closed_port_url(), secret=None)  # no secret at all, and the database down
    health = ff_app("health").test_client()
    r = health.get("/")
    assert r.status_code == 200
    assert set(r.get_json()) == {"status", "request_id"} and r.get_json()["status"] == "ok"
    assert health.post("/").status_code == 405
    head = health.head("/")  # probes that send HEAD got 405 before
    assert head.status_code == 200 and head.data == b""
    get_settings.cache_clear()


def test_ready_reports_the_database_and_the_last_run(client: FlaskClient) -> None:
    r = client.get("/", headers=AUTH)
    doc = r.get_json()
    assert r.status_code == 200 and doc["status"] == "ready"
    assert doc["database"] == {"status": "ok", "last_run": None}
    assert doc["broker"] == {"status": "not_configured"}
    ff_app("tick").test_client().post("/", headers=AUTH, json={"minute": "2025-06-14T15:00:00Z"})
    last = client.get("/", headers=AUTH).get_json()["database"]["last_run"]
    assert last == {"minute": "2025-06-14T15:00:00+00:00", "status": "market_closed", "trigger": "http"}


def test_ready_database_down_then_503_with_retry_after(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, closed_port_url())
    r = client.get("/", headers=AUTH)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.get_json()["database"]["status"] == "unavailable" and r.get_json()["status"] == "not_ready"


def test_ready_broker_unreachable_then_503(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", "key-id")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "secret-key")
    port = closed_port_url().split("@127.0.0.1:")[1].split("/")[0]
    monkeypatch.setenv("ALPACA_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ALPACA_RETRY_BUDGET_SECONDS", "0.5")
    get_settings.cache_clear()
    r = client.get("/", headers=AUTH)
    assert r.status_code == 503, r.get_json()
    assert r.get_json()["database"]["status"] == "ok" and r.get_json()["broker"]["status"] == "unavailable"


def test_ready_refusals(client: FlaskClient, db_url: str) -> None:
    before = counts(db_url)
    assert client.get("/").status_code == 401
    assert client.post("/", headers=AUTH).status_code == 405
    assert client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert counts(db_url) == before
