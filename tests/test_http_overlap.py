"""Overlapping ticks of one minute at the HTTP boundary, as Cloud Scheduler's retries produce them.

A retry can reach the tick service while the first attempt still runs (a timed-out request is
answered 504 while its instance keeps working) or after it finished. Either way the retry must be
acknowledged with a 2xx, or Cloud Scheduler would retry it again inside the same minute: the
strategy answers `busy` while another worker holds its claim, and `already_processed` once the
minute is done. Neither writes a second order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from strategy_engine.core import calendar
from strategy_engine.core.models import RowId
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import seed
from tests.http_support import JSON_AUTH, configure, counts, ff_app
from tests.test_exactly_once import SYMS, T, entry_setup

SCHEDULE = "X-CloudScheduler-ScheduleTime"
TICK = {**JSON_AUTH, SCHEDULE: T.isoformat().replace("+00:00", "Z")}


@pytest.fixture
def strategy(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RowId]:
    """A migrated database with one strategy that enters long on every symbol at T."""
    with connect(db_url) as s:
        strategy_id = seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    configure(monkeypatch, db_url)
    yield strategy_id
    get_settings.cache_clear()


def _tick(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    r = client.post("/", headers=TICK, data="{}")
    return r.status_code, r.get_json()


def test_retry_while_the_first_attempt_holds_the_minute_answers_busy_then_already_processed(
    db_url: str, strategy: RowId
) -> None:
    client = ff_app("tick").test_client()
    day = calendar.trading_date(T)
    with connect(db_url) as first_attempt:
        # The first attempt's claim: the row lock the engine takes on the strategy's day.
        first_attempt.execute(
            "insert into strategy_state (strategy_id, trading_date) values (%s, %s)", (strategy, day)
        )
        with first_attempt.transaction():
            first_attempt.execute(
                "select 1 from strategy_state where strategy_id = %s and trading_date = %s for update",
                (strategy, day),
            )
            status, doc = _tick(client)
            assert status == 200, doc  # acknowledged: Cloud Scheduler does not retry a 2xx
            assert doc["minute"] == T.isoformat() and doc["trigger"] == "cloud_scheduler"
            assert [s["outcome"] for s in doc["strategies"]] == ["busy"]
            assert doc["orders"] == 0
            assert counts(db_url)["paper_trades"] == 0

    # The holder let go without finishing the minute: the next attempt does the work, once.
    status, doc = _tick(client)
    assert status == 200 and [s["outcome"] for s in doc["strategies"]] == ["processed"]
    assert doc["orders"] == len(SYMS)
    after = counts(db_url)

    status, doc = _tick(client)
    assert status == 200 and [s["outcome"] for s in doc["strategies"]] == ["already_processed"]
    assert doc["orders"] == 0
    again = counts(db_url)
    assert again["paper_trades"] == after["paper_trades"] == len(SYMS)
    assert again["strategy_logs"] == after["strategy_logs"]
    assert again["engine_runs"] == after["engine_runs"] + 1  # every attempt is recorded
