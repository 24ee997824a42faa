"""A run closed as abandoned while its process was still alive keeps `abandoned`: the late finish
is recorded beside it, never over it, and logged with the outcome the alerts match."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import pytest

from strategy_engine import engine
from strategy_engine.backtest import synthetic
from strategy_engine.brokers.base import Broker
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core.models import Account, Position
from strategy_engine.settings import Settings
from strategy_engine.store import connect
from tests.conftest import DAY, load_market, seed

SYMS = ("IWM", "QQQ")


def test_a_late_finish_never_overwrites_abandoned(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        t = load_market(s, synthetic.MarketSpec(SYMS, DAY, DAY)).minutes[30]

    def slow(acct: Account, pos: list[Position], minute: datetime, slip: float) -> Broker:
        # Meanwhile, another process's tick closes this run as abandoned (its timeout has passed).
        with connect(db_url) as other:
            closed = other.fetchall(
                "update engine_runs set status = 'abandoned' where status = 'running' returning id"
            )
            assert len(closed) == 1
        return SimulatedBroker(acct.cash, pos, slip, now=minute)

    caplog.set_level(logging.INFO, logger="strategy_engine")
    with connect(db_url) as s:
        result = engine.tick(s, t, deps=engine.Deps(simulated_broker=slow))
        assert result.status == "ok"  # what this process did
        status, late, decisions = s.fetchone(
            "select status, detail->'late_finish', decisions from engine_runs where id = %s", (result.run_id,)
        ) or (None, None, None)
    assert status == "abandoned" and decisions == 0  # the row was not overwritten (2 decisions)
    assert late["status"] == "ok" and late["counts"]["decisions"] == len(SYMS)
    assert late["detail"] == result.as_json()["strategies"]
    (line,) = [r for r in caplog.records if r.getMessage() == "tick"]
    assert line.fields["outcome"] == "abandoned" and line.levelno == logging.ERROR  # type: ignore[attr-defined]


def test_the_default_timeout_is_twice_the_longest_function_timeout() -> None:
    assert Settings.model_fields["engine_run_timeout_seconds"].default == 2 * 900


def test_a_dead_processs_run_is_closed_by_the_next_tick_with_the_line_the_alerts_match(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operations.md: the alert keys on outcome `abandoned`; the line names the dead run and
    the run that closed it, so the two engine_runs rows can be found."""
    dead = uuid.uuid4()
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        t = load_market(s, synthetic.MarketSpec(SYMS, DAY, DAY)).minutes[30]
        s.execute(
            "insert into engine_runs (id, trigger, minute, status, started_at)"
            " values (%s, 'schedule', %s, 'running', now() - interval '1 hour')",
            (dead, t),
        )
    caplog.set_level(logging.INFO, logger="strategy_engine")
    with connect(db_url) as s:
        result = engine.tick(s, t)
        status, closed_by = s.fetchone(
            "select status, detail->>'closed_by' from engine_runs where id = %s", (dead,)
        ) or (None, None)
    assert (status, closed_by) == ("abandoned", str(result.run_id))
    lines = [r for r in caplog.records if r.getMessage() == "run abandoned"]
    assert [(r.levelno, r.fields) for r in lines] == [  # type: ignore[attr-defined]
        (logging.WARNING, {"outcome": "abandoned", "run_id": str(dead), "by": str(result.run_id)})
    ]
