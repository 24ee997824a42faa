"""The SMA: hand-computed windows, a naive left-to-right mean written here, and the tick's
many-symbol form rounding exactly like the backfill's sliding windows."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_engine.core.indicators import last_sma, last_smas, sma

prices = st.lists(st.floats(0.01, 10_000, allow_nan=False, allow_infinity=False), max_size=45)


def naive_mean(window: list[float]) -> float:
    """The documented rounding: ((v0 + v1) + ...) + v[n-1], then one division."""
    total = window[0]
    for v in window[1:]:
        total += v
    return total / len(window)


def test_sma_of_hand_computed_windows() -> None:
    assert sma(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3).tolist() == [2.0, 3.0, 4.0]
    assert sma(np.array([1.0, 2.0]), 3).tolist() == []
    assert last_sma([1.0, 2.0, 3.0, 4.0], 2) == 3.5
    assert last_sma([1.0, 2.0, 3.0, 4.0], 4) == 2.5
    assert last_sma([1.0, 2.0, 3.0], 4) is None
    assert last_smas([[1.0, 2.0, 3.0], [5.0], [2.0, 4.0]], 2) == [2.5, None, 3.0]


def test_sma_adds_left_to_right_not_pairwise_or_exactly() -> None:
    """1e16 + 1 rounds back to 1e16 (ties to even), twice: left to right the window sums to 0,
    where the exact mean (statistics) is 0.5, and adding the ones first would give 2 / 4."""
    window = [1e16, 1.0, 1.0, -1e16]
    assert statistics.mean(window) == 0.5
    assert (window[0] + (window[1] + window[2]) + window[3]) / 4 == 0.5
    assert sma(np.array(window), 4).tolist() == [0.0]
    assert last_sma(window, 4) == 0.0
    assert last_smas([window], 4) == [0.0]


@settings(max_examples=200, derandomize=True)
@given(st.lists(prices, max_size=20), st.integers(1, 30))
def test_many_symbols_at_once_equal_the_naive_mean_of_each(windows: list[list[float]], window: int) -> None:
    expected = [naive_mean(w[-window:]) if len(w) >= window else None for w in windows]
    assert last_smas(windows, window) == expected
    assert [last_sma(w, window) for w in windows] == expected


@settings(max_examples=200, derandomize=True)
@given(prices, st.integers(1, 30))
def test_every_sliding_window_is_the_naive_mean_of_its_slice(values: list[float], window: int) -> None:
    slices = [values[i : i + window] for i in range(len(values) - window + 1)]
    assert sma(np.asarray(values, dtype=np.float64), window).tolist() == [naive_mean(s) for s in slices]
    # and within rounding of the exact mean
    for got, s in zip(sma(np.asarray(values, dtype=np.float64), window).tolist(), slices, strict=True):
        assert got == pytest.approx(statistics.mean(s), rel=1e-12)
    assert last_sma(values, window) == (naive_mean(slices[-1]) if slices else None)
