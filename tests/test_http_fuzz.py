"""Generated requests against `tick` and `backfill`: never a 5xx, and a refusal never writes.

Methods, credentials, content types, schedule headers and bodies are drawn together, so most
examples fail somewhere in the chain (401, 405, 413, 415, 400, 404) and some get through to the
engine (200). The database's row counts are compared around every example.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import seed
from tests.http_support import SECRET, configure, counts, ff_app

T = TypeVar("T")
TIMES = [
    "2025-06-13T15:00:00Z",
    "2025-06-13T11:00:00-04:00",
    "2025-06-14T15:00:00Z",
    "2099-01-01T00:00:00Z",
    "2010-01-04T15:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2025-06-13T15:00:00",
    "2025-06-13",
    "",
]
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_value = st.recursive(
    json_scalar | st.sampled_from(TIMES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def mostly(value: T, other: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`value` three times in four, else something drawn from `other`."""
    return st.tuples(st.integers(0, 3), other).map(lambda p: value if p[0] else p[1])


def bodies(fields: list[str], plausible: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[str | bytes]:
    """Plausible objects (right keys, values good or bad), arbitrary objects, JSON, bytes, too big."""
    keys = st.tuples(st.integers(0, 3), st.sampled_from(fields), st.text(max_size=8)).map(
        lambda p: p[1] if p[0] else p[2]
    )
    obj = st.dictionaries(keys, json_value, max_size=len(fields) + 1)
    big = st.integers(64 * 1024 - 16, 64 * 1024 + 64).map(lambda n: json.dumps({"pad": "x" * n}))
    either = st.tuples(st.integers(0, 2), plausible, obj).map(lambda p: p[1] if p[0] else p[2])
    return either.map(json.dumps) | json_value.map(json.dumps) | st.binary(max_size=120) | big


NAMES = st.sampled_from(["nft", "nope", ""])
TICK_BODY = st.fixed_dictionaries({}, optional={"minute": st.sampled_from(TIMES), "strategy": NAMES})
BACKFILL_BODY = st.fixed_dictionaries(
    # report stays off: a valid body would otherwise render a chart per example
    {
        "strategy": NAMES,
        "start": mostly("2025-06-13T13:30:00Z", st.sampled_from(TIMES)),
        "end": mostly("2025-06-13T10:30:00-04:00", st.sampled_from(TIMES)),
        "report": st.just(False),
    },
    optional={
        "initial_cash": mostly(50_000, st.sampled_from([1, 0, -5, 1e13, "100", None])),
        "slippage_bps": mostly(2.5, st.sampled_from([0, -1, 5000, None, "1"])),
        "config": mostly({"sma_window": 5}, st.sampled_from([{}, {"sma_window": "5"}, {"nope": 1}, []])),
    },
)


def headers() -> st.SearchStrategy[dict[str, str]]:
    """Mostly well-formed transport (so examples reach validation and the engine), sometimes not."""
    auth = mostly(f"Bearer {SECRET}", st.none() | header_text.map("Bearer {}".format) | header_text)
    odd_types = ["application/json; charset=utf-8", "text/plain", "application/json; charset=latin-1"]
    ctype = mostly("application/json", st.none() | st.sampled_from(odd_types) | header_text)
    schedule = st.none() | st.sampled_from(TIMES) | header_text
    encoding = mostly(None, st.sampled_from(["identity", "gzip"]) | header_text)
    parts = st.tuples(auth, ctype, schedule, encoding)
    names = ("Authorization", "Content-Type", "X-CloudScheduler-ScheduleTime", "Content-Encoding")
    return parts.map(lambda vals: {n: v for n, v in zip(names, vals, strict=True) if v is not None})


METHODS = st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "HEAD"])  # sampled_from keeps repeats
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with connect(db_url) as s:
        seed(s, config={"symbols": ["SPY"]})
    configure(monkeypatch, db_url)
    yield db_url
    get_settings.cache_clear()


def _check(client: FlaskClient, db: str, method: str, hdrs: dict[str, str], body: Any) -> None:
    before = counts(db)
    r = client.open("/", method=method, headers=hdrs, data=body)
    event(f"status {r.status_code}")  # the spread shows in --hypothesis-show-statistics
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True))
    if r.status_code >= 400:
        after = counts(db)
        if "ahead of the host clock" in r.get_data(as_text=True):
            # A minute too far ahead is refused with a record of the refusal (docs/operations.md,
            # "refused"): one engine_runs row, nothing else.
            before["engine_runs"] += 1
        assert after == before, r.get_data(as_text=True)
    if method != "HEAD":
        assert "request_id" in r.get_json()


@FUZZ
@given(method=METHODS, hdrs=headers(), body=bodies(["minute", "strategy"], TICK_BODY))
def test_tick_fuzz_never_5xx_and_refusals_write_nothing(
    db: str, method: str, hdrs: dict[str, str], body: str | bytes
) -> None:
    _check(ff_app("tick").test_client(), db, method, hdrs, body)


@FUZZ
@given(
    method=METHODS,
    hdrs=headers(),
    body=bodies(["strategy", "start", "end", "initial_cash", "slippage_bps", "report"], BACKFILL_BODY),
)
def test_backfill_fuzz_never_5xx_and_refusals_write_nothing(
    db: str, method: str, hdrs: dict[str, str], body: str | bytes
) -> None:
    pytest.importorskip("strategy_engine.backtest.backfill")
    _check(ff_app("backfill").test_client(), db, method, hdrs, body)
