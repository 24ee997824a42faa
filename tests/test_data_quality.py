"""Bad data never trades: the data-quality rule at the tick and in the backfill, table-driven.

Every case is one symbol, AAA, with 25 good bars of close 100 before T and one spoiled row;
the tick's decision at T and the backfill's decision at T must be the same row, with the bad
row counted (`ignored_bars`, `ignored_flow`) and no NaN anywhere.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from strategy_engine import engine
from strategy_engine.backtest import backfill
from strategy_engine.core import data_quality as dq
from strategy_engine.store import Session, market
from tests.conftest import seed

T = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)
CONFIG = {"symbols": ["AAA"], "min_flow_premium": 1, "min_flow_ratio": 0.0}
BAD = -3  # the minute before T whose bar is spoiled
LOG = (
    "select reason, outcome, signal_payload from strategy_logs where run_mode = %s"
    " and decision_minute = %s order by id"
)


def _bars(s: Session, closes: list[float] | None = None) -> None:
    closes = closes or [100.0] * 25
    n = len(closes)
    rows = [("AAA", T - timedelta(minutes=n - i), c, c, c, c, 1000) for i, c in enumerate(closes)]
    market.insert_bars(s, rows)


def _tick_and_backfill(s: Session) -> tuple[Any, Any]:
    """The tick's decision at T and the backfill's, for the strategy `nft`."""
    result = engine.tick(s, T)
    assert result.status == "ok", result.as_json()
    req = backfill.BackfillRequest(
        strategy="nft", start=T, end=T + timedelta(minutes=1), report=False, all_decisions=True
    )
    backfill.execute(s, req)
    (live,) = s.fetchall(LOG, ("live", T))
    (back,) = s.fetchall(LOG, ("backfill", T))
    return live, back


# close value (SQL), and the column it spoils
BAD_BARS = [
    ("'NaN'", "close"),
    ("'Infinity'", "close"),
    ("'-Infinity'", "close"),
    ("0", "close"),
    ("-1", "close"),
    ("1e30", "close"),
    ("1e400", "close"),  # numeric holds it; float8 would not
    ("null", "close"),
    ("'NaN'", "open"),
    ("0", "high"),
    ("-1", "low"),
]


@pytest.mark.parametrize(("value", "column"), BAD_BARS)
def test_a_bad_bar_is_a_missing_bar_in_tick_and_backfill(session: Session, value: str, column: str) -> None:
    seed(session, config=CONFIG)
    _bars(session)
    session.execute(
        f"update market_data_1m set {column} = {value} where ts = %s", (T + timedelta(minutes=BAD),)
    )
    live, back = _tick_and_backfill(session)
    assert live == back
    payload = live[2]
    assert (payload["close"], payload["sma"], payload["bars"]) == (100.0, 100.0, 20)
    assert payload["ignored_bars"] == 1
    assert "NaN" not in json.dumps(payload) and "Infinity" not in json.dumps(payload)


def test_a_bad_last_bar_leaves_the_previous_close(session: Session) -> None:
    seed(session, config=CONFIG)
    _bars(session)
    session.execute("update market_data_1m set close = 'NaN' where ts = %s", (T - timedelta(minutes=1),))
    live, back = _tick_and_backfill(session)
    assert live == back
    assert live[2]["close"] == 100.0 and live[2]["ignored_bars"] == 1


# (option_type, side, size, trade_price, notional) -> (bull cents, bear cents, ignored)
FLOW_CASES: list[tuple[tuple[Any, ...], tuple[int, int, int]]] = [
    (("call", "buy", 10, 2.0, None), (200_000, 0, 0)),
    (("call", "buy", None, None, 1_000.0), (100_000, 0, 0)),
    (("call", "buy", None, None, "NaN"), (0, 0, 1)),
    (("call", "buy", None, None, "Infinity"), (0, 0, 1)),
    (("call", "buy", None, None, "-Infinity"), (0, 0, 1)),
    (("call", "buy", None, None, -5.0), (0, 0, 1)),
    (("call", "buy", None, None, 1e30), (0, 0, 1)),
    (("call", "buy", None, None, 1e10), (10**12, 0, 0)),  # the bound itself counts
    (("call", "buy", None, None, 1e10 + 1), (0, 0, 1)),
    (("call", "buy", -1, 2.0, None), (0, 0, 1)),
    (("call", "buy", 10, "NaN", None), (0, 0, 1)),
    (("call", "buy", 10, -2.0, None), (0, 0, 1)),
    (("call", "buy", 10, 1e30, None), (0, 0, 1)),
    (("call", "buy", 10, 2.0, "NaN"), (0, 0, 1)),  # a bad notional spoils the event
    (("call", "buy", None, None, None), (0, 0, 1)),  # no premium at all
    (("straddle", "buy", 10, 2.0, None), (0, 0, 1)),  # an option type nobody knows
    ((" CALL", "ASK ", 10, 2.0, None), (200_000, 0, 0)),
    (("C", "above_ask", 10, 2.0, None), (200_000, 0, 0)),
    (("c", "BID", 10, 2.0, None), (0, 200_000, 0)),
    (("Call", "below_bid", 10, 2.0, None), (0, 200_000, 0)),
    (("P", "mid", 10, 2.0, None), (0, 200_000, 0)),
    (("put ", "Sell", 10, 2.0, None), (200_000, 0, 0)),
    (("p", "bid", 10, 2.0, None), (200_000, 0, 0)),
    (("PUT", "xyz", 10, 2.0, None), (0, 200_000, 0)),
    (("call", "", 10, 2.0, None), (200_000, 0, 0)),
]


@pytest.mark.parametrize(("event", "expected"), FLOW_CASES)
def test_flow_events_are_counted_or_ignored_alike(
    session: Session, event: tuple[Any, ...], expected: tuple[int, int, int]
) -> None:
    seed(session, config=CONFIG)
    _bars(session)
    session.execute(
        "insert into options_flow (ts, underlying, option_type, side, size, trade_price, notional)"
        " values (%s, 'AAA', %s, %s, %s, %s::numeric, %s::numeric)",
        (T - timedelta(minutes=2), *event),
    )
    live, back = _tick_and_backfill(session)
    assert live == back
    p = live[2]
    assert (round(p["bull"] * 100), round(p["bear"] * 100), p["ignored_flow"]) == expected


def test_flow_sums_cannot_overflow(session: Session) -> None:
    """200 000 events at the per-event bound: 2e17 cents, clamped at MAX_SUM_CENTS (1e17)."""
    seed(session, config=CONFIG)
    _bars(session)
    session.execute(
        "insert into options_flow (ts, underlying, option_type, side, notional)"
        " select %s, 'AAA', 'call', 'buy', 1e10 from generate_series(1, 200000)",
        (T - timedelta(minutes=2),),
    )
    live, back = _tick_and_backfill(session)
    assert live == back
    assert round(live[2]["bull"] * 100) == dq.MAX_SUM_CENTS == 10**17


def test_sql_and_python_spell_every_vendor_label_alike(session: Session) -> None:
    """The SQL CASE is generated from data_quality's maps: every spelling, trimmed and in any case."""
    types = [*dq.OPTION_TYPES, "straddle", ""]
    sides = [*dq.SIDES, "", "xyz"]
    spellings = [
        (t2, s2) for t in types for s in sides for t2, s2 in ((t, s), (f" {t.upper()} ", f"{s.title()} "))
    ]
    session.execute(
        "insert into options_flow (ts, underlying, option_type, side, size, trade_price)"
        " select '2025-06-13T15:00:00Z'::timestamptz + make_interval(secs => k), 'SPY', t, s, 1, 1"
        " from unnest(%s::text[], %s::text[]) with ordinality as u(t, s, k)",
        ([t for t, _ in spellings], [s for _, s in spellings]),
    )
    got = session.fetchall(
        "select f.option_type, f.side, e.dir from public.options_flow f"
        f" join ({market.scored_flow('true')}) e on e.ts = f.ts order by f.ts"
    )
    assert [(t, s, d) for t, s, d in got] == [(t, s, dq.direction(t, s)) for t, s in spellings]
    # and the table itself, written out (docs/architecture.md, "Vendor spellings")
    assert [dq.side(x) for x in ("ask", "above_ask", "bid", "below_bid", "mid", "buy ", " SELL", "?")] == [
        "buy", "buy", "sell", "sell", "unknown", "buy", "sell", "unknown"
    ]  # fmt: skip
    assert [dq.option_type(x) for x in ("call", "C", "put", "p", " Put ", "x")] == [
        "call", "call", "put", "put", "put", None
    ]  # fmt: skip


def test_vectorised_break_rule_equals_the_scalar_form() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        n = int(rng.integers(0, 60))
        jumps = np.where(rng.random(n) < 0.08, rng.choice([0.1, 0.25, 4.0, 10.0, 1.19, 1.21], n), 1.0)
        closes = 100 * np.cumprod(jumps * np.exp(rng.normal(0, 0.01, n)))
        closes[rng.random(n) < 0.05] = 2.0 * dq.MAX_PRICE  # adjusted closes above MAX_PRICE: bad bars
        k = np.arange(n + 1, dtype=np.int64)
        for window in (1, 3, 20):
            want = [dq.after_last_break(closes[max(i - window, 0) : i].tolist()) for i in k.tolist()]
            assert dq.usable_bars(closes, k, window).tolist() == want
        ts = np.sort(rng.integers(0, 1000, n)).astype(np.int64)
        splits = sorted(
            (int(x), float(r)) for x, r in zip(rng.integers(0, 1000, 3), (2.0, 0.1, 1.5), strict=True)
        )
        for t in (0, 400, 999):
            assert dq.split_factor_array(ts, splits, t).tolist() == dq.split_factors(ts.tolist(), splits, t)


@pytest.mark.parametrize(
    ("prev", "cur", "brk"),
    [
        (100, 120, False),
        (100, 120.01, True),
        (120.01, 100, True),
        (100, 10, True),
        (10, 100, True),
        (100, 99, False),
    ],
)
def test_break_threshold(prev: float, cur: float, brk: bool) -> None:
    assert dq.after_last_break([prev, cur]) == (1 if brk else 2)
    assert bool(dq.breaks(np.array([prev, cur]))[1]) is brk


def test_a_split_without_a_corporate_action_holds_until_the_window_refills(session: Session) -> None:
    """A 10:1 split inside the window of a long position: never an exit at the split."""
    seed(session, config={**CONFIG, "sma_window": 5})
    _bars(session, [100.0] * 20 + [10.0] * 5)
    session.execute("insert into broker_positions (account_id, symbol, qty, avg_entry_price)"
                    " select id, 'AAA', 100, 100 from broker_accounts")  # fmt: skip
    live, _ = _tick_and_backfill_at(session, T - timedelta(minutes=1))
    assert live[:2] == ("insufficient_bars", "held") and live[2]["bars"] == 4
    live, _ = _tick_and_backfill_at(session, T)
    assert live[2]["bars"] == 5 and live[2]["trend"] == "flat"


def test_a_recorded_split_is_adjusted_and_the_series_goes_on(session: Session) -> None:
    seed(session, config={**CONFIG, "sma_window": 5})
    start = datetime(2025, 6, 12, 19, 55, tzinfo=UTC)
    rows = [("AAA", start + timedelta(minutes=i), 100.0, 100.0, 100.0, 100.0, 1) for i in range(5)]
    rows += [("AAA", datetime(2025, 6, 13, 13, 30, tzinfo=UTC) + timedelta(minutes=i), 10.0, 10.0, 10.0, 10.0, 1)
             for i in range(2)]  # fmt: skip
    market.insert_bars(session, rows)
    session.execute("insert into corporate_actions values ('AAA', '2025-06-13', 10)")
    at = datetime(2025, 6, 13, 13, 32, tzinfo=UTC)
    live, back = _tick_and_backfill_at(session, at)
    assert live == back
    assert (live[2]["bars"], live[2]["close"], live[2]["sma"]) == (5, 10.0, 10.0)


def _tick_and_backfill_at(s: Session, t: datetime) -> tuple[Any, Any]:
    engine.tick(s, t)
    req = backfill.BackfillRequest(
        strategy="nft", start=t, end=t + timedelta(minutes=1), report=False, all_decisions=True
    )
    backfill.execute(s, req)
    (live,) = s.fetchall(LOG, ("live", t))
    (back,) = s.fetchall(LOG, ("backfill", t))
    return live, back


def test_finite_is_the_journal_backstop() -> None:
    doc = {"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}}
    assert dq.finite(doc) == {"a": None, "b": [None, 1.0], "c": {"d": None}}


def test_an_adjusted_close_above_max_price_is_a_bad_bar() -> None:
    bad = 2.0 * dq.MAX_PRICE
    assert dq.after_last_break([100.0, bad, 100.0, 101.0]) == 2
    assert dq.after_last_break([100.0, 101.0, bad]) == 0
    closes = np.array([100.0, bad, 100.0, 101.0, bad])
    assert dq.usable_bars(closes, np.arange(6, dtype=np.int64), 20).tolist() == [0, 1, 0, 1, 2, 0]


def test_a_reverse_split_that_adjusts_past_max_price_is_no_trade(session: Session) -> None:
    """A 1:1,000,000 reverse split of a $5,000 stock: the pre-split bars adjust to $5e9, bad bars;
    the tick and the backfill both see only the post-split bars (none yet at the open)."""
    seed(session, config={**CONFIG, "sma_window": 5})
    start = datetime(2025, 6, 12, 19, 50, tzinfo=UTC)
    rows = [("AAA", start + timedelta(minutes=i), 5e3, 5e3, 5e3, 5e3, 1) for i in range(10)]
    rows += [("AAA", datetime(2025, 6, 13, 13, 30, tzinfo=UTC) + timedelta(minutes=i), 5e9 / 1e3, 5e6, 5e6, 5e6, 1)
             for i in range(3)]  # fmt: skip
    market.insert_bars(session, rows)
    session.execute("insert into corporate_actions values ('AAA', '2025-06-13', 0.000001)")
    live, back = _tick_and_backfill_at(session, datetime(2025, 6, 13, 13, 30, tzinfo=UTC))
    assert live == back
    assert (live[0], live[2]["bars"], live[2]["close"], live[2]["sma"]) == (
        "insufficient_bars",
        0,
        None,
        None,
    )
    live, back = _tick_and_backfill_at(session, datetime(2025, 6, 13, 13, 33, tzinfo=UTC))
    assert live == back
    assert (live[0], live[2]["bars"], live[2]["close"], live[2]["sma"]) == ("insufficient_bars", 3, 5e6, None)


def test_hold_rows_and_cli_json_spell_no_nan_or_infinity() -> None:
    from strategy_engine.backtest.rows import _floats
    from strategy_engine.cli.options import emit

    assert _floats(np.array([1.5, math.nan, math.inf, -math.inf])) == ["1.5", "null", "null", "null"]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit({"a": math.inf, "b": [math.nan, 2.0]}, True, lambda: None)
    assert json.loads(out.getvalue()) == {"a": None, "b": [None, 2.0]}
