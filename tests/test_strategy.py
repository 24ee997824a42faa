"""Naive Flow + Trend (DESIGN §3): the decision table row by row, its boundaries, its config.

Pure code only: no database, no clock, no network. Every row of the decision table is one
parametrized case with an id, first against `decide_position` (the table itself) and then
through `naive_flow_trend` (the table wired to the classifiers and the payload).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from strategy_engine.core import indicators
from strategy_engine.core.errors import InputError
from strategy_engine.core.models import Action, Features
from strategy_engine.core.strategies import REGISTRY, config_dump, get_spec, parse_config, validation_message
from strategy_engine.core.strategies.base import check_symbol, check_text, qty_problem
from strategy_engine.core.strategies.naive_flow_trend import (
    BEARISH,
    BULLISH,
    DOWN,
    FLAT,
    NEUTRAL,
    UP,
    NaiveFlowTrendConfig,
    decide_position,
    flow_code,
    flow_of,
    flow_ratio,
    naive_flow_trend,
    ratio_of,
    trend_code,
    trend_of,
)

PURE = settings(max_examples=200, derandomize=True, database=None, deadline=None)

TRENDS = {"up": UP, "flat": FLAT, "down": DOWN}
FLOWS = {"bullish": BULLISH, "neutral": NEUTRAL, "bearish": BEARISH}

SMA = 100.0
CLOSE_FOR = {"up": 101.0, "flat": 100.0, "down": 99.0}  # 100 bps from the SMA, band is 5 bps
CENTS_FOR = {  # (bull_cents, bear_cents): $100k one way is past both default thresholds
    "bullish": (10_000_000, 0),
    "neutral": (0, 0),
    "bearish": (0, 10_000_000),
}


def cfg(**overrides: Any) -> NaiveFlowTrendConfig:
    parsed = parse_config("naive_flow_trend", overrides)
    assert isinstance(parsed, NaiveFlowTrendConfig)
    return parsed


def features(trend: str = "flat", flow: str = "neutral", *, bars: int = 20, symbol: str = "SPY") -> Features:
    bull, bear = CENTS_FOR[flow]
    return Features(symbol, bars, CLOSE_FOR[trend], SMA, None, bull, bear)


# --- the decision table ------------------------------------------------------------------------

# (id, position, trend, flow, enough bars, allow_short) -> (action, qty, reason); order_qty = 3.
TABLE: list[tuple[str, float, str, str, bool, bool, Action, float, str]] = [
    ("flat_insufficient_bars", 0, "up", "bullish", False, False, Action.HOLD, 0, "insufficient_bars"),
    ("long_insufficient_bars", 5, "down", "bearish", False, False, Action.HOLD, 0, "insufficient_bars"),
    ("short_insufficient_bars", -5, "up", "bullish", False, True, Action.HOLD, 0, "insufficient_bars"),
    ("flat_up_bullish_entry_long", 0, "up", "bullish", True, False, Action.BUY, 3, "entry_long"),
    ("flat_up_bullish_entry_long_shorts_on", 0, "up", "bullish", True, True, Action.BUY, 3, "entry_long"),
    ("flat_short_down_bearish_entry_short", 0, "down", "bearish", True, True, Action.SELL, 3, "entry_short"),
    ("flat_down_bearish_no_short_no_entry", 0, "down", "bearish", True, False, Action.HOLD, 0, "no_entry"),
    ("flat_up_neutral_no_entry", 0, "up", "neutral", True, True, Action.HOLD, 0, "no_entry"),
    ("flat_up_bearish_no_entry", 0, "up", "bearish", True, True, Action.HOLD, 0, "no_entry"),
    ("flat_flat_bullish_no_entry", 0, "flat", "bullish", True, True, Action.HOLD, 0, "no_entry"),
    ("flat_down_bullish_no_entry", 0, "down", "bullish", True, True, Action.HOLD, 0, "no_entry"),
    ("flat_down_neutral_no_entry", 0, "down", "neutral", True, True, Action.HOLD, 0, "no_entry"),
    ("flat_flat_bearish_no_entry", 0, "flat", "bearish", True, True, Action.HOLD, 0, "no_entry"),
    ("flat_flat_neutral_no_entry", 0, "flat", "neutral", True, True, Action.HOLD, 0, "no_entry"),
    ("long_down_exit_long", 5, "down", "neutral", True, False, Action.SELL, 5, "exit_long"),
    ("long_down_bullish_exit_long", 5, "down", "bullish", True, False, Action.SELL, 5, "exit_long"),
    ("long_bearish_exit_long", 5, "up", "bearish", True, False, Action.SELL, 5, "exit_long"),
    ("long_flat_bearish_exit_long", 2.5, "flat", "bearish", True, True, Action.SELL, 2.5, "exit_long"),
    ("long_up_bullish_hold", 5, "up", "bullish", True, False, Action.HOLD, 0, "hold_position"),
    ("long_flat_neutral_hold", 5, "flat", "neutral", True, False, Action.HOLD, 0, "hold_position"),
    ("short_up_exit_short", -4, "up", "neutral", True, True, Action.BUY, 4, "exit_short"),
    ("short_up_bearish_exit_short", -4, "up", "bearish", True, True, Action.BUY, 4, "exit_short"),
    ("short_bullish_exit_short", -4, "down", "bullish", True, True, Action.BUY, 4, "exit_short"),
    ("short_flat_bullish_exit_short", -1.5, "flat", "bullish", True, False, Action.BUY, 1.5, "exit_short"),
    ("short_down_bearish_hold", -4, "down", "bearish", True, True, Action.HOLD, 0, "hold_position"),
    ("short_flat_neutral_hold", -4, "flat", "neutral", True, True, Action.HOLD, 0, "hold_position"),
]
TABLE_IDS = [row[0] for row in TABLE]
TABLE_ARGS = ("case", "position", "trend", "flow", "enough", "allow_short", "action", "qty", "reason")


@pytest.mark.parametrize(TABLE_ARGS, TABLE, ids=TABLE_IDS)
def test_decide_position_when_table_row_then_its_action(
    case: str,
    position: float,
    trend: str,
    flow: str,
    enough: bool,
    allow_short: bool,
    action: Action,
    qty: float,
    reason: str,
) -> None:
    c = cfg(order_qty=3, allow_short=allow_short)
    got = decide_position(TRENDS[trend], FLOWS[flow], position, enough, c)
    assert got == (action, qty, reason)


@pytest.mark.parametrize(TABLE_ARGS, TABLE, ids=TABLE_IDS)
def test_naive_flow_trend_when_table_row_then_signal(
    case: str,
    position: float,
    trend: str,
    flow: str,
    enough: bool,
    allow_short: bool,
    action: Action,
    qty: float,
    reason: str,
) -> None:
    c = cfg(order_qty=3, allow_short=allow_short)
    sig = naive_flow_trend(features(trend, flow, bars=20 if enough else 19), position, c)
    assert (sig.symbol, sig.action, sig.qty, sig.reason) == ("SPY", action, qty, reason)


@pytest.mark.parametrize(
    ("bars", "sma", "close"),
    [(0, None, None), (19, 100.0, 101.0), (20, None, 101.0), (20, 100.0, None)],
    ids=["no_bars", "one_bar_short", "no_sma", "no_close"],
)
def test_naive_flow_trend_when_window_incomplete_then_insufficient_bars(
    bars: int, sma: float | None, close: float | None
) -> None:
    f = Features("SPY", bars, close, sma, None, 10_000_000, 0)
    for position in (0.0, 5.0, -5.0):
        sig = naive_flow_trend(f, position, cfg())
        assert (sig.action, sig.qty, sig.reason) == (Action.HOLD, 0.0, "insufficient_bars")
        assert sig.payload["trend"] is None


@pytest.mark.parametrize(
    ("position", "trend", "flow", "allow_short"),
    list(itertools.product([0.0, 7.0, -7.0], TRENDS, FLOWS, [False, True])),
)
def test_decide_position_when_any_input_then_never_grows_or_flips_a_position(
    position: float, trend: str, flow: str, allow_short: bool
) -> None:
    action, qty, _ = decide_position(TRENDS[trend], FLOWS[flow], position, True, cfg(allow_short=allow_short))
    if position > 0:
        assert action is not Action.BUY
        assert action is Action.HOLD or qty == position
    elif position < 0:
        assert action is not Action.SELL
        assert action is Action.HOLD or qty == -position
    elif not allow_short:
        assert action is not Action.SELL


# --- trend band boundaries ---------------------------------------------------------------------


@pytest.mark.parametrize("band_bps", [0.0, 5.0, 12.5, 100.0])
@pytest.mark.parametrize("sma", [1.0, 99.37, 100.0, 4321.5])
def test_trend_code_when_close_at_band_edge_then_flat_and_just_past_then_trend(
    band_bps: float, sma: float
) -> None:
    band = band_bps / 10_000.0
    upper = sma * (1.0 + band)
    lower = sma * (1.0 - band)
    assert int(trend_code(upper, sma, band_bps)) == FLAT
    assert int(trend_code(np.nextafter(upper, np.inf), sma, band_bps)) == UP
    assert int(trend_code(lower, sma, band_bps)) == FLAT
    assert int(trend_code(np.nextafter(lower, -np.inf), sma, band_bps)) == DOWN


def test_trend_code_when_arrays_then_same_codes_as_scalars() -> None:
    closes = np.array([100.0, 100.05, 100.06, 99.95, 99.94, 101.0, 99.0])
    got = trend_code(closes, np.full(closes.shape, 100.0), 5.0)
    assert got.dtype == np.int8
    assert got.tolist() == [int(trend_code(c, 100.0, 5.0)) for c in closes]
    assert got.tolist() == [FLAT, FLAT, UP, FLAT, DOWN, UP, DOWN]


def test_trend_code_when_a_float32_sma_then_the_band_is_computed_in_float64() -> None:
    """A float32 SMA of 100 is exactly 100, so the band's edges are 100.05 and 99.95 as for a
    float64 one (and as `trend_of` computes them). In float32 arithmetic the edges would round
    to 100.0499954 and 99.9499969, turning 100.049998 up and 99.949998 flat."""
    closes = np.array([100.049998, 100.05, 100.050001, 99.950002, 99.95, 99.949998])
    got = trend_code(closes, np.full(closes.shape, 100.0, dtype=np.float32), 5.0)
    assert got.tolist() == [FLAT, FLAT, UP, FLAT, FLAT, DOWN]
    assert got.tolist() == [trend_of(float(c), 100.0, 5.0) for c in closes]


@pytest.mark.parametrize(
    ("close", "trend"),
    [(100.0 * (1.0 + 5 / 10_000.0), "flat"), (np.nextafter(100.0 * (1.0 + 5 / 10_000.0), np.inf), "up")],
    ids=["at_upper_band_flat", "just_above_up"],
)
def test_naive_flow_trend_when_close_at_upper_band_then_payload_trend(close: float, trend: str) -> None:
    f = Features("SPY", 20, float(close), 100.0, None, 10_000_000, 0)
    sig = naive_flow_trend(f, 0.0, cfg())
    assert sig.payload["trend"] == trend
    assert sig.reason == ("entry_long" if trend == "up" else "no_entry")


# --- flow boundaries (integer cents; defaults $50,000 and 0.2) ----------------------------------


@pytest.mark.parametrize(
    ("bull", "bear", "flow"),
    [
        (15_000_000, 10_000_000, BULLISH),  # net exactly $50,000 and ratio exactly 0.2
        (14_999_999, 10_000_000, NEUTRAL),  # one cent short of the premium
        (15_000_001, 10_000_001, NEUTRAL),  # premium met, ratio a hair under 0.2
        (30_000_000, 20_000_000, BULLISH),  # ratio exactly 0.2 with more premium
        (5_000_000, 0, BULLISH),  # net exactly $50,000, ratio 1
        (4_999_999, 0, NEUTRAL),
        (10_000_000, 15_000_000, BEARISH),  # mirrored
        (10_000_000, 14_999_999, NEUTRAL),
        (10_000_001, 15_000_001, NEUTRAL),
        (20_000_000, 30_000_000, BEARISH),
        (0, 5_000_000, BEARISH),
        (0, 4_999_999, NEUTRAL),
        (0, 0, NEUTRAL),  # no flow: ratio 0
        (7_000_000, 7_000_000, NEUTRAL),  # balanced
    ],
    ids=[
        "bull_at_premium_and_ratio",
        "bull_cent_short",
        "bull_ratio_short",
        "bull_ratio_exact_large",
        "bull_one_sided_exact",
        "bull_one_sided_cent_short",
        "bear_at_premium_and_ratio",
        "bear_cent_short",
        "bear_ratio_short",
        "bear_ratio_exact_large",
        "bear_one_sided_exact",
        "bear_one_sided_cent_short",
        "no_flow",
        "balanced",
    ],
)
def test_flow_code_when_at_thresholds_then_classified(bull: int, bear: int, flow: int) -> None:
    assert int(flow_code(bull, bear, 50_000, 0.2)) == flow


def test_flow_ratio_when_no_flow_then_zero_and_else_net_over_total() -> None:
    assert float(flow_ratio(0, 0)) == 0.0
    assert float(flow_ratio(15_000_000, 10_000_000)) == 0.2
    assert float(flow_ratio(0, 3)) == -1.0
    got = flow_ratio(np.array([0, 3, 1]), np.array([0, 1, 3]))
    assert got.tolist() == [0.0, 0.5, -0.5]


@PURE
@given(st.integers(0, 10**12), st.integers(0, 10**12))
def test_flow_code_when_sides_swapped_then_mirrored(bull: int, bear: int) -> None:
    assert int(flow_code(bull, bear, 50_000, 0.2)) == -int(flow_code(bear, bull, 50_000, 0.2))
    assert float(flow_ratio(bull, bear)) == -float(flow_ratio(bear, bull))
    assert -1.0 <= float(flow_ratio(bull, bear)) <= 1.0


@pytest.mark.parametrize("threshold_cents", [7, 110, 12_802, 1_000_003])
def test_flow_code_when_net_exactly_a_cents_valued_threshold_then_bullish_and_bearish(
    threshold_cents: int,
) -> None:
    dollars = threshold_cents / 100
    assert int(flow_code(threshold_cents, 0, dollars, 0.2)) == BULLISH
    assert int(flow_code(0, threshold_cents, dollars, 0.2)) == BEARISH


# --- the signal payload -------------------------------------------------------------------------

PAYLOAD_KEYS = {"close", "sma", "trend", "bull", "bear", "net", "ratio", "position_qty", "bars"}


def test_naive_flow_trend_when_decided_then_payload_holds_its_inputs() -> None:
    f = Features("QQQ", 20, 101.0, 100.0, None, 15_000_000, 10_000_000)
    sig = naive_flow_trend(f, 0.0, cfg())
    assert set(sig.payload) >= PAYLOAD_KEYS
    assert {k: sig.payload[k] for k in PAYLOAD_KEYS} == {
        "close": 101.0,
        "sma": 100.0,
        "trend": "up",
        "bull": 150_000.0,
        "bear": 100_000.0,
        "net": 50_000.0,
        "ratio": 0.2,
        "position_qty": 0.0,
        "bars": 20,
    }
    assert (sig.symbol, sig.action, sig.qty, sig.reason) == ("QQQ", Action.BUY, 1, "entry_long")


@pytest.mark.parametrize(
    ("position", "trend", "flow"),
    [(0.0, "flat", "neutral"), (5.0, "down", "bearish"), (-2.0, "up", "bullish"), (0.0, "up", "bullish")],
)
def test_naive_flow_trend_when_any_decision_then_payload_names_trend_and_position(
    position: float, trend: str, flow: str
) -> None:
    sig = naive_flow_trend(features(trend, flow), position, cfg())
    assert set(sig.payload) >= PAYLOAD_KEYS
    assert sig.payload["trend"] == trend
    assert sig.payload["position_qty"] == position
    bull, bear = CENTS_FOR[flow]
    assert sig.payload["net"] == (bull - bear) / 100


# --- config -------------------------------------------------------------------------------------

DESIGN_DEFAULTS: dict[str, Any] = {
    "symbols": ["SPY", "IWM", "QQQ"],
    "sma_window": 20,
    "trend_band_bps": 5,
    "flow_lookback_minutes": 15,
    "min_flow_premium": 50_000,
    "min_flow_ratio": 0.2,
    "order_qty": 1,
    "allow_short": False,
    "max_bar_age_seconds": 120,
}


@pytest.mark.parametrize("raw", [None, {}], ids=["none", "empty"])
def test_parse_config_when_empty_then_design_defaults(raw: dict[str, Any] | None) -> None:
    c = parse_config("naive_flow_trend", raw)
    assert isinstance(c, NaiveFlowTrendConfig)
    assert config_dump(c) == DESIGN_DEFAULTS
    assert c.bars_needed == 20
    assert c.flow_minutes == 15


def test_parse_config_when_json_numbers_then_accepted_and_round_trips() -> None:
    raw = dict(DESIGN_DEFAULTS, symbols=["AAPL", "BRK.B"], min_flow_premium=100_000, trend_band_bps=2.5)
    c = parse_config("naive_flow_trend", raw)
    assert c.symbols == ("AAPL", "BRK.B")
    assert parse_config("naive_flow_trend", config_dump(c)) == c
    assert c.fingerprint() == parse_config("naive_flow_trend", config_dump(c)).fingerprint()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sma_window", "20"),
        ("sma_window", 20.0),
        ("sma_window", True),
        ("sma_window", 0),
        ("allow_short", "yes"),
        ("allow_short", 1),
        ("symbols", "SPY"),
        ("symbols", ["spy"]),
        ("symbols", ["SPY", "SPY"]),
        ("symbols", []),
        ("symbols", ["SPY", 1]),
        ("order_qty", 0),
        ("order_qty", "1"),
        ("min_flow_ratio", 1.5),
        ("min_flow_ratio", "0.2"),
        ("min_flow_premium", -1),
        ("trend_band_bps", None),
        ("flow_lookback_minutes", 0),
        ("max_bar_age_seconds", 0),
        ("bogus_key", 1),
    ],
    ids=repr,
)
def test_parse_config_when_bad_key_then_input_error_naming_it(key: str, value: object) -> None:
    with pytest.raises(InputError) as info:
        parse_config("naive_flow_trend", {key: value})
    message = str(info.value)
    assert f"config.{key}" in message
    assert "\n" not in message


def test_parse_config_when_unknown_strategy_type_then_input_error_naming_it() -> None:
    with pytest.raises(InputError) as info:
        parse_config("mean_reversion", {})
    assert str(info.value) == "unknown strategy_type 'mean_reversion' (known: naive_flow_trend)"
    assert "naive_flow_trend" in REGISTRY


def test_get_spec_when_unknown_then_every_known_type_listed_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A second registered type, inserted after naive_flow_trend but sorting before it.
    monkeypatch.setitem(REGISTRY, "a_second", REGISTRY["naive_flow_trend"])
    with pytest.raises(InputError) as info:
        get_spec("mean_reversion")
    assert str(info.value) == "unknown strategy_type 'mean_reversion' (known: a_second, naive_flow_trend)"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"sma_window": "20"}, "config.sma_window: Input should be a valid integer"),
        (
            {"sma_window": 0, "bogus": 1},
            "config.sma_window: Input should be greater than or equal to 1; config.bogus: Extra inputs are not permitted",
        ),
        # The whole-config checks have no key of their own: named `config`, not `config.`.
        (
            {"order_qty": 1e-10},
            "config: Value error, order_qty: qty 1e-10 has more than 9 decimal places",
        ),
        (["SPY"], "config: Input should be a valid dictionary or instance of NaiveFlowTrendConfig"),
    ],
    ids=["one-key", "two-keys", "whole-config", "not-an-object"],
)
def test_parse_config_when_invalid_then_the_one_line_the_user_reads(raw: Any, expected: str) -> None:
    with pytest.raises(InputError) as info:
        parse_config("naive_flow_trend", raw)
    assert str(info.value) == f"invalid strategy config: {expected}"


class _Listed(BaseModel):
    model_config = ConfigDict(strict=True)
    xs: list[int]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"xs": [1, "a"]}, "xs.1: Input should be a valid integer"),
        ("nope", "value: Input should be a valid dictionary or instance of _Listed"),
    ],
    ids=["nested-path-dotted", "no-path-no-prefix"],
)
def test_validation_message_without_prefix_then_dotted_path_or_value(raw: object, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Listed.model_validate(raw)
    assert validation_message(info.value) == expected


def test_fingerprint_when_design_defaults_then_sha256_of_sorted_compact_json() -> None:
    # The canonical form written out by hand: keys sorted, no spaces, floats as JSON floats.
    # Stored with every backfill and sweep run: a change here orphans every earlier run.
    blob = (
        '{"allow_short":false,"flow_lookback_minutes":15,"max_bar_age_seconds":120.0,'
        '"min_flow_premium":50000.0,"min_flow_ratio":0.2,"order_qty":1.0,"sma_window":20,'
        '"symbols":["SPY","IWM","QQQ"],"trend_band_bps":5.0}'
    )
    expected = hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert expected == "ffe6e6be70a76e8b"
    assert cfg().fingerprint() == expected


@pytest.mark.parametrize(
    ("qty", "short", "expected"),
    [
        (0.5, None, None),  # a fractional buy or sell of a long: Alpaca takes it
        (1e-9, None, None),  # exactly 9 decimal places: Alpaca's limit, accepted
        (1.000000001, None, None),
        (1e-10, None, "qty 1e-10 has more than 9 decimal places"),
        (0.0, None, "invalid qty 0.0 (must be a finite number > 0)"),
        (-1.0, None, "invalid qty -1.0 (must be a finite number > 0)"),
        (math.inf, None, "invalid qty inf (must be a finite number > 0)"),
        (math.nan, None, "invalid qty nan (must be a finite number > 0)"),
        (2.0, True, None),
        (0.5, True, "qty 0.5 is fractional: fractional shares cannot be sold short"),
        (0.5, False, None),
    ],
    ids=repr,
)
def test_qty_problem_when_quantity_then_alpacas_refusal_or_none(
    qty: float, short: bool | None, expected: str | None
) -> None:
    got = qty_problem(qty) if short is None else qty_problem(qty, short=short)
    assert got == expected


# --- indicators ---------------------------------------------------------------------------------


def bits(a: NDArray[np.float64]) -> list[int]:
    return [int(x) for x in np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)]


@st.composite
def series_and_window(draw: st.DrawFn) -> tuple[NDArray[np.float64], int]:
    n = draw(st.integers(1, 60))
    values = draw(
        hnp.arrays(
            np.float64,
            n,
            elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False),
        )
    )
    return values, draw(st.integers(1, n))


@PURE
@given(series_and_window())
def test_window_sums_when_one_window_or_many_then_bit_identical(
    case: tuple[NDArray[np.float64], int],
) -> None:
    values, window = case
    many = indicators.window_sums(values, window)
    assert many.shape == (values.shape[0] - window + 1,)
    singles = np.array(
        [indicators.window_sums(values[i : i + window], window)[0] for i in range(many.shape[0])]
    )
    assert bits(many) == bits(singles)


@PURE
@given(series_and_window())
def test_last_sma_when_any_series_then_bit_identical_to_the_vectorised_last_window(
    case: tuple[NDArray[np.float64], int],
) -> None:
    values, window = case
    got = indicators.last_sma(values, window)
    assert got is not None
    vectorised = indicators.sma(values, window)[-1]
    assert bits(np.array([got])) == bits(np.array([vectorised]))
    assert indicators.last_sma(list(values), window) == got


def test_last_sma_when_more_bars_than_window_then_last_window_including_last_bar() -> None:
    closes = [float(x) for x in range(1, 22)]  # 1..21
    assert indicators.last_sma(closes, 20) == sum(range(2, 22)) / 20  # 11.5: bars 2..21
    assert indicators.last_sma(closes[:20], 20) == 10.5
    assert indicators.last_sma(closes[:19], 20) is None
    assert indicators.last_sma([], 1) is None
    assert indicators.last_sma([7.0], 1) == 7.0


def test_window_sums_when_window_longer_than_series_then_empty() -> None:
    assert indicators.window_sums(np.array([1.0, 2.0]), 3).shape == (0,)
    assert indicators.window_sums(np.array([1.0, 2.0, 3.0]), 2).tolist() == [3.0, 5.0]


@PURE
@given(st.lists(series_and_window(), min_size=1, max_size=6), st.integers(1, 30))
def test_last_smas_when_many_symbols_then_bit_identical_to_one_at_a_time(
    cases: list[tuple[NDArray[np.float64], int]], window: int
) -> None:
    windows = [[float(x) for x in values] for values, _ in cases]
    many = indicators.last_smas(windows, window)
    one_by_one = [indicators.last_sma(w, window) for w in windows]
    assert [x is None for x in many] == [x is None for x in one_by_one] == [len(w) < window for w in windows]
    assert bits(np.array([x for x in many if x is not None])) == bits(
        np.array([x for x in one_by_one if x is not None])
    )


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    st.floats(0.01, 1e5, allow_nan=False),
    st.floats(0.01, 1e5, allow_nan=False),
    st.floats(0, 500, allow_nan=False),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
    st.floats(0, 1e7, allow_nan=False),
    st.floats(0, 1, allow_nan=False),
)
def test_scalar_and_array_classifiers_agree_bit_for_bit(
    close: float, sma: float, band: float, bull: int, bear: int, premium: float, ratio: float
) -> None:
    assert trend_of(close, sma, band) == int(trend_code(close, sma, band))
    assert trend_of(sma, sma, band) == int(trend_code(sma, sma, band))
    assert flow_of(bull, bear, premium, ratio) == int(flow_code(bull, bear, premium, ratio))
    assert ratio_of(bull, bear) == float(flow_ratio(bull, bear))


# --- what the mutation run showed untested (docs/parts/i11b-mutation.md) -------------------------


def test_ratio_when_one_cent_of_flow_then_plus_or_minus_one() -> None:
    assert (ratio_of(1, 0), ratio_of(0, 1), ratio_of(0, 0)) == (1.0, -1.0, 0.0)
    assert flow_ratio(np.array([1, 0, 0]), np.array([0, 1, 0])).tolist() == [1.0, -1.0, 0.0]


@pytest.mark.parametrize(
    ("bull", "bear", "expected"),
    [
        (0, 200, BEARISH),  # net exactly -min premium (2.00 = 200 cents)
        (400, 600, BEARISH),  # net -200, ratio exactly -0.2
        (401, 600, NEUTRAL),  # net -199
        (600, 400, BULLISH),  # the mirror image
        (200, 0, BULLISH),
    ],
)
def test_flow_when_exactly_at_the_bearish_thresholds_then_bearish(
    bull: int, bear: int, expected: int
) -> None:
    assert flow_of(bull, bear, 2.0, 0.2) == expected
    codes = flow_code(np.array([bull]), np.array([bear]), 2.0, 0.2)
    assert (codes.tolist(), codes.dtype) == ([expected], np.dtype(np.int8))


def test_decide_position_when_fractional_long_then_exits_or_holds_as_a_long() -> None:
    cfg = NaiveFlowTrendConfig(symbols=("SPY",))
    assert decide_position(DOWN, NEUTRAL, 0.5, True, cfg) == (Action.SELL, 0.5, "exit_long")
    assert decide_position(UP, BULLISH, 0.5, True, cfg) == (Action.HOLD, 0.0, "hold_position")
    assert decide_position(UP, NEUTRAL, -0.5, True, cfg) == (Action.BUY, 0.5, "exit_short")


def test_payload_when_entry_then_every_key_computed_by_hand() -> None:
    """Close 101 over SMA 100 (band 5 bps: 100.05) is up; 70,000 bull against 10,000 bear is net
    60,000 >= 50,000 at ratio 0.75 >= 0.2, bullish."""
    f = Features("SPY", 20, 101.0, 100.0, None, 7_000_000, 1_000_000, ignored_bars=2, ignored_flow=3)
    signal = naive_flow_trend(f, 0.0, NaiveFlowTrendConfig(symbols=("SPY",)))
    assert (signal.action, signal.qty, signal.reason) == (Action.BUY, 1.0, "entry_long")
    assert signal.payload == {
        "close": 101.0,
        "sma": 100.0,
        "trend": "up",
        "flow": "bullish",
        "bull": 70_000.0,
        "bear": 10_000.0,
        "net": 60_000.0,
        "ratio": 0.75,
        "position_qty": 0.0,
        "bars": 20,
        "ignored_bars": 2,
        "ignored_flow": 3,
        "series_break": False,
    }


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("a\x00b", "0000"),
        ("tab\there", "0009"),
        ("esc\x1b[31m", "001B"),
        ("del\x7f", "007F"),
        ("c1\x85", "0085"),
    ],
)
def test_check_text_when_a_control_character_then_value_error_naming_its_code_point(
    value: str, code: str
) -> None:
    with pytest.raises(ValueError, match=f"^control character U\\+{code} not allowed$"):
        check_text(value)


def test_check_text_when_no_control_character_then_the_value_itself() -> None:
    value = "naïve flow – trend 2 (ünïcode, spaces) \u200b"  # a zero-width space is Cf, not Cc
    assert check_text(value) is value


@pytest.mark.parametrize("symbol", ["aapl", "", "BRK B", 7])
def test_check_symbol_when_not_an_upper_case_ticker_then_value_error_quoting_it(symbol: object) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"invalid symbol {symbol!r} (upper-case ticker expected)")
    ):
        check_symbol(symbol)
