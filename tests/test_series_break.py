"""A break with a position open: held (flagged `series_break`, a WARNING per minute) while the
window refills, then the strategy's own exit rule runs on the post-break bars.

AAA trades at 100, gaps down 25% at 14:10Z with no corporate action, then either keeps falling
0.5% a minute (the exit fires once the 5-bar window has refilled) or stays flat at 75 (no exit
rule fires: the documented trade-off of the break rule)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from strategy_engine import engine
from strategy_engine.core.models import Account, Position
from strategy_engine.store import Session, market
from strategy_engine.store import accounts as acct_store
from tests.conftest import seed

GAP = datetime(2025, 6, 13, 14, 10, tzinfo=UTC)
CONFIG = {"symbols": ["AAA"], "sma_window": 5, "min_flow_premium": 1e9}  # flow stays neutral


@pytest.mark.parametrize(("step", "last_reason"), [(0.995, "exit_long"), (1.0, "hold_position")])
def test_a_position_through_a_break_is_flagged_then_managed(
    session: Session, caplog: pytest.LogCaptureFixture, step: float, last_reason: str
) -> None:
    seed(session, config=CONFIG, cash=10_000.0)
    closes = [100.0] * 10 + [75.0 * step**i for i in range(10)]
    start = GAP - timedelta(minutes=10)
    market.insert_bars(
        session, [("AAA", start + timedelta(minutes=i), c, c, c, c, 1) for i, c in enumerate(closes)]
    )
    found = acct_store.find_account(session, "sim")
    assert found is not None
    acct_store.save_mirror(
        session, found[0].id, Account(9_000.0, 9_000.0, 10_000.0), [Position("AAA", 10.0, 100.0)]
    )
    caplog.set_level(logging.WARNING, logger="strategy_engine")
    for k in range(1, 6):  # 14:11 .. 14:15: 1 .. 5 post-break bars
        assert engine.tick(session, GAP + timedelta(minutes=k)).status == "ok"
    rows = session.fetchall("select reason, signal_payload from strategy_logs order by decision_minute")
    assert [r[0] for r in rows] == ["insufficient_bars"] * 4 + [last_reason]
    assert [(r[1]["bars"], r[1]["series_break"], r[1]["position_qty"]) for r in rows] == [
        (1, True, 10.0),
        (2, True, 10.0),
        (3, True, 10.0),
        (4, True, 10.0),
        (5, False, 10.0),
    ]
    warned = [r for r in caplog.records if r.getMessage() == "series break"]
    # what an operator keys on (docs/operations.md): which strategy holds which symbols blind, when
    assert [(r.levelno, r.fields) for r in warned] == [  # type: ignore[attr-defined]
        (logging.WARNING, {"strategy": "nft", "symbols": ["AAA"], "minute": f"2025-06-13T14:1{k}:00+00:00"})
        for k in range(1, 5)
    ]
    held = session.fetchall("select qty::float8 from broker_positions where qty <> 0")
    assert held == ([] if last_reason == "exit_long" else [(10.0,)])
