"""The `health` target: liveness and database reachability, authenticated like the others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from strategy_engine.settings import get_settings
from tests.http_support import AUTH, closed_port_url, configure, counts, ff_app


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    configure(monkeypatch, db_url)
    yield ff_app("health").test_client()
    get_settings.cache_clear()


def test_database_up_then_200_and_the_last_run(client: FlaskClient) -> None:
    r = client.get("/", headers=AUTH)
    assert r.status_code == 200 and r.get_json()["database"] == "ok" and r.get_json()["last_run"] is None
    ff_app("tick").test_client().post("/", headers=AUTH, json={"minute": "2025-06-14T15:00:00Z"})
    last = client.get("/", headers=AUTH).get_json()["last_run"]
    assert last == {"minute": "2025-06-14T15:00:00+00:00", "status": "market_closed", "trigger": "http"}


def test_database_down_then_503_with_retry_after(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, closed_port_url())
    r = client.get("/", headers=AUTH)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"


def test_refusals(client: FlaskClient, db_url: str) -> None:
    before = counts(db_url)
    assert client.get("/").status_code == 401
    assert client.post("/", headers=AUTH).status_code == 405
    assert client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert counts(db_url) == before
