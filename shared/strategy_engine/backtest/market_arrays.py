"""A range's market as numpy arrays, and what the strategy sees of it at every minute.

Every feature of a symbol at decision minute T (its last close, SMA, bar count, last bar time,
flow sums, and the trend and flow classes) depends on the market only, never on the account, so
the backfill computes them for all minutes at once: bars with ts < T by `searchsorted`, the SMA
with the tick's own `indicators.sma` (bit-identical to one window), flow sums in integer cents
as differences of cumulative sums over [T - lookback, T), and the classes with the strategy's
own numpy functions. Times are Unix microseconds (int64) throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from strategy_engine.core import calendar
from strategy_engine.core.indicators import sma
from strategy_engine.core.strategies.naive_flow_trend import (
    BEARISH,
    BULLISH,
    DOWN,
    FLAT,
    UP,
    NaiveFlowTrendConfig,
    flow_code,
    trend_code,
)

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
MINUTE_US = 60_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def to_us(t: datetime) -> int:
    d = t - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def session_grid(start: datetime, end: datetime) -> IntArray:
    """`calendar.session_minutes(start, end)` as Unix microseconds, one arange per session."""
    parts = [np.empty(0, dtype=np.int64)]
    for a, z in calendar.session_windows(start, end):
        parts.append(np.arange(to_us(a), to_us(z), MINUTE_US, dtype=np.int64))
    return np.concatenate(parts)


@dataclass(frozen=True)
class MarketArrays:
    """Bars (warm-up included) and flow per symbol, ascending symbols, times in Unix µs."""

    symbols: tuple[str, ...]
    bar_ts: tuple[IntArray, ...]
    bar_close: tuple[FloatArray, ...]
    flow_ts: tuple[IntArray, ...]
    flow_bull: tuple[IntArray, ...]  # cents per distinct flow ts
    flow_bear: tuple[IntArray, ...]

    def select(self, symbols: Sequence[str]) -> MarketArrays:
        idx = [self.symbols.index(s) for s in sorted(symbols)]
        return MarketArrays(
            tuple(self.symbols[i] for i in idx),
            tuple(self.bar_ts[i] for i in idx),
            tuple(self.bar_close[i] for i in idx),
            tuple(self.flow_ts[i] for i in idx),
            tuple(self.flow_bull[i] for i in idx),
            tuple(self.flow_bear[i] for i in idx),
        )


@dataclass(frozen=True)
class FeatureGrid:
    """What the strategy sees of every (symbol, minute), as [symbols, minutes] arrays."""

    bars: IntArray  # bars the tick would load: min(bars before T, sma_window)
    close: FloatArray  # NaN where no bar yet
    sma: FloatArray  # NaN where fewer than sma_window bars
    last_ts: IntArray  # -1 where no bar yet
    bull: IntArray
    bear: IntArray
    enough: BoolArray
    trend: NDArray[np.int8]
    flow: NDArray[np.int8]


def features(market: MarketArrays, grid: IntArray, cfg: NaiveFlowTrendConfig) -> FeatureGrid:
    """Every minute's features: bars with ts < T, flow with ts in [T - lookback, T)."""
    shape = (len(market.symbols), grid.shape[0])
    w, lookback = cfg.sma_window, cfg.flow_lookback_minutes * MINUTE_US
    close, avg = np.full(shape, np.nan), np.full(shape, np.nan)
    last_ts, bars = np.full(shape, -1, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    bull, bear = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    for j in range(shape[0]):
        ts, c = market.bar_ts[j], market.bar_close[j]
        k = np.searchsorted(ts, grid, "left")
        bars[j] = np.minimum(k, w)
        if ts.size:
            last = np.maximum(k - 1, 0)
            close[j] = np.where(k > 0, c[last], np.nan)
            last_ts[j] = np.where(k > 0, ts[last], -1)
        if ts.size >= w:
            avg[j] = np.where(k >= w, sma(c, w)[np.maximum(k - w, 0)], np.nan)
        fts = market.flow_ts[j]
        lo, hi = np.searchsorted(fts, grid - lookback, "left"), np.searchsorted(fts, grid, "left")
        for out, cents in ((bull, market.flow_bull[j]), (bear, market.flow_bear[j])):
            cum = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(cents, dtype=np.int64)))
            out[j] = cum[hi] - cum[lo]
    enough = bars >= w
    trend = np.where(enough, trend_code(close, avg, cfg.trend_band_bps), FLAT).astype(np.int8)
    flow = flow_code(bull, bear, cfg.min_flow_premium, cfg.min_flow_ratio)
    return FeatureGrid(bars, close, avg, last_ts, bull, bear, enough, trend, flow)


def candidates(f: FeatureGrid, allow_short: bool) -> list[tuple[IntArray, IntArray, IntArray]]:
    """Per symbol, the minutes where the strategy orders when (flat, long, short).

    The decision table of docs/architecture.md, "Naive Flow + Trend".
    """
    up, down = f.trend == UP, f.trend == DOWN
    bull, bear = f.flow == BULLISH, f.flow == BEARISH
    entry = f.enough & ((up & bull) | (allow_short & down & bear))
    exit_long, exit_short = f.enough & (down | bear), f.enough & (up | bull)
    return [
        (np.flatnonzero(entry[j]), np.flatnonzero(exit_long[j]), np.flatnonzero(exit_short[j]))
        for j in range(f.bars.shape[0])
    ]
