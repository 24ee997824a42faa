"""The `backfill` target: a strict request in, the backfill summary out, refusals write nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from strategy_engine.backtest import synthetic
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import DAY, load_market, seed
from tests.http_support import AUTH, JSON_AUTH, closed_port_url, configure, counts, ff_app

pytest.importorskip("strategy_engine.backtest.backfill")

SUMMARY_KEYS = {"orders", "realized_pnl", "unrealized_pnl", "total_pnl", "max_drawdown", "win_rate"}
SUMMARY_KEYS |= {"exposure", "blocked", "decisions"}
START, END = "2025-06-13T09:30:00-04:00", "2025-06-13T12:00:00-04:00"


def body(**changes: Any) -> dict[str, Any]:
    return {"strategy": "nft", "start": START, "end": END, "report": False} | changes


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    with connect(db_url) as s:
        seed(s, config={"symbols": ["SPY", "QQQ"], "min_flow_premium": 20_000})
        load_market(s, synthetic.MarketSpec(("SPY", "QQQ"), DAY, DAY, seed=3))
    configure(monkeypatch, db_url)
    yield ff_app("backfill").test_client()
    get_settings.cache_clear()


def test_valid_request_then_summary(client: FlaskClient, db_url: str) -> None:
    r = client.post("/", headers=AUTH, json=body(initial_cash=50_000, slippage_bps=1.5))
    doc = r.get_json()
    assert r.status_code == 200, doc
    assert set(doc) >= SUMMARY_KEYS and doc["decisions"] > 0
    assert counts(db_url)["backfill_runs"] == 1


def test_integer_money_accepted_as_a_number(client: FlaskClient) -> None:
    assert client.post("/", headers=AUTH, json=body(initial_cash=100000, slippage_bps=0)).status_code == 200


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (body(sweep="x"), "sweep"),
        (body(initial_cash="100000"), "initial_cash"),
        (body(slippage_bps=None), "slippage_bps"),
        (body(report=1), "report"),
        (body(start=1749821400), "start"),
        (body(strategy=["nft"]), "strategy"),
        (body(report_path="/tmp/x.html"), "report_path"),  # noqa: S108 - refused, never written
        (body(config="{}"), "config"),
        ({"start": START, "end": END}, "strategy"),
    ],
)
def test_bad_fields_then_400_naming_them_and_nothing_written(
    client: FlaskClient, db_url: str, data: dict[str, Any], field: str
) -> None:
    before = counts(db_url)
    r = client.post("/", headers=AUTH, json=data)
    assert r.status_code == 400 and field in {f["field"] for f in r.get_json()["fields"]}, r.get_json()
    assert counts(db_url) == before


def test_nan_then_400(client: FlaskClient, db_url: str) -> None:
    data = f'{{"strategy": "nft", "start": "{START}", "end": "{END}", "initial_cash": NaN}}'
    r = client.post("/", headers=JSON_AUTH, data=data)
    assert r.status_code == 400 and r.get_json()["fields"][0]["field"] == "initial_cash"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (body(strategy="nope"), 404),
        (body(start=END, end=START), 400),
        (body(config={"sma_window": "20"}), 400),
        (body(start="2010-01-04T15:00:00Z", end="2010-01-05T15:00:00Z"), 400),
    ],
)
def test_refused_by_the_backfill_then_4xx_and_nothing_written(
    client: FlaskClient, db_url: str, data: dict[str, Any], status: int
) -> None:
    before = counts(db_url)
    r = client.post("/", headers=AUTH, json=data)
    assert r.status_code == status, r.get_json()
    assert counts(db_url) == before


def test_transport_refusals(client: FlaskClient, db_url: str) -> None:
    before = counts(db_url)
    assert client.post("/", json=body()).status_code == 401
    assert client.get("/", headers=AUTH).status_code == 405
    assert client.post("/", headers=AUTH, data="strategy=nft", content_type="text/plain").status_code == 415
    assert client.post("/", headers=AUTH, json=body(strategy="x" * 70_000)).status_code == 413
    assert client.post("/", headers=JSON_AUTH).status_code == 400  # a body is required
    assert counts(db_url) == before


def test_database_down_then_503(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, closed_port_url())
    r = client.post("/", headers=AUTH, json=body())
    assert r.status_code == 503 and r.headers["Retry-After"]
