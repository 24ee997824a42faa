"""The tick's many-symbol SMA rounds exactly like the backfill's sliding windows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_engine.core.indicators import last_sma, last_smas, sma

prices = st.lists(st.floats(0.01, 10_000, allow_nan=False, allow_infinity=False), max_size=45)


@settings(max_examples=200, derandomize=True)
@given(st.lists(prices, max_size=20), st.integers(1, 30))
def test_many_symbols_at_once_equals_one_at_a_time(windows: list[list[float]], window: int) -> None:
    assert last_smas(windows, window) == [last_sma(w, window) for w in windows]


@settings(max_examples=200, derandomize=True)
@given(prices, st.integers(1, 30))
def test_last_window_equals_the_last_sliding_window(values: list[float], window: int) -> None:
    got = last_sma(values, window)
    if len(values) < window:
        assert got is None
    else:
        assert got == float(sma(np.asarray(values), window)[-1])
