"""A range's market as numpy arrays, and what the strategy sees of it at every minute.

Every feature of a symbol at decision minute T (its last close, SMA, bar count, last bar time,
flow sums, and the trend and flow classes) depends on the market only, never on the account, so
the backfill computes them for all minutes at once: bars with ts < T by `searchsorted`, the SMA
with the tick's own `indicators.sma` (bit-identical to one window), flow sums in integer cents
as differences of cumulative sums over [T - lookback, T), and the classes with the strategy's
own numpy functions. Times are Unix microseconds (int64) throughout.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from strategy_engine.core import calendar
from strategy_engine.core import data_quality as dq
from strategy_engine.core.errors import InputError
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
from strategy_engine.store import Session
from strategy_engine.store import backfill as store

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
    """Bars (warm-up included) and flow per symbol, ascending symbols, times in Unix µs.

    Bars are the good bars of `core.data_quality`'s rule; `bar_bad` holds the times of the bad
    ones (counted, never used), `splits` each symbol's known splits (ex time, ratio), ascending.
    """

    symbols: tuple[str, ...]
    bar_ts: tuple[IntArray, ...]
    bar_close: tuple[FloatArray, ...]
    flow_ts: tuple[IntArray, ...]
    flow_bull: tuple[IntArray, ...]  # cents per distinct flow ts
    flow_bear: tuple[IntArray, ...]
    flow_ignored: tuple[IntArray, ...] = ()  # ignored events per distinct flow ts
    bar_bad: tuple[IntArray, ...] = ()
    splits: tuple[tuple[tuple[int, float], ...], ...] = ()

    def column(self, name: str, j: int) -> Any:
        """Field `name` of symbol j; an optional field left empty reads as no rows."""
        values = getattr(self, name)
        if values:
            return values[j]
        if name == "flow_ignored":
            return np.zeros_like(self.flow_ts[j])
        return () if name == "splits" else np.empty(0, dtype=np.int64)

    def select(self, symbols: Sequence[str]) -> MarketArrays:
        idx = [self.symbols.index(s) for s in sorted(symbols)]
        names = [f.name for f in fields(self)][1:]
        picked = {n: tuple(self.column(n, i) for i in idx) for n in names}
        return MarketArrays(tuple(self.symbols[i] for i in idx), **picked)


def load(
    s: Session, symbols: tuple[str, ...], start: datetime, end: datetime, window: int, flow_minutes: int
) -> MarketArrays:
    """Two statements whatever the range or the number of symbols: bars (warm-up included), flow."""
    bars = store.bars_arrays(s, symbols, start, end, window)
    flow = store.flow_arrays(s, symbols, start - timedelta(minutes=flow_minutes), end)
    syms = tuple(sorted(symbols))
    empty_i, empty_f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    none = store.BarArrays(empty_i, empty_f, empty_i, ())
    got = [bars.get(sym, none) for sym in syms]
    flows = [flow.get(sym, (empty_i, empty_i, empty_i, empty_i)) for sym in syms]
    return MarketArrays(
        syms,
        tuple(b.ts for b in got),
        tuple(b.close for b in got),
        flow_ts=tuple(f[0] for f in flows),
        flow_bull=tuple(f[1] for f in flows),
        flow_bear=tuple(f[2] for f in flows),
        flow_ignored=tuple(f[3] for f in flows),
        bar_bad=tuple(b.bad_ts for b in got),
        splits=tuple(b.splits for b in got),
    )


def check_budget(symbols: int, minutes: int, budget: int, *, warmup: int = 0, copies: int = 1) -> None:
    """Memory grows with symbols x (session minutes + `warmup` bars loaded before the range), ~100
    bytes each in the replay's arrays and rows, times the `copies` held at once (a sweep's worker
    processes each hold the data): a request over `BACKFILL_MAX_SYMBOL_MINUTES` is refused
    (InputError, naming the limit) before any read."""
    charge = symbols * (minutes + warmup) * copies
    if charge > budget:
        times = f" x {copies} workers" if copies > 1 else ""
        raise InputError(
            f"backfill of {symbols} symbols x ({minutes} session minutes + {warmup} warm-up bars){times}"
            f" = {charge} exceeds the budget of {budget} symbol-minutes (BACKFILL_MAX_SYMBOL_MINUTES):"
            " split the range or the symbols"
        )


@dataclass(frozen=True)
class FeatureGrid:
    """What the strategy sees of every (symbol, minute), as [symbols, minutes] arrays."""

    bars: IntArray  # bars the tick would use: min(bars before T, sma_window), after the last break
    close: FloatArray  # the last close (split-adjusted), NaN where no bar yet
    sma: FloatArray  # NaN where fewer than sma_window usable bars
    last_ts: IntArray  # -1 where no bar yet
    bull: IntArray
    bear: IntArray
    enough: BoolArray
    trend: NDArray[np.int8]
    flow: NDArray[np.int8]
    ignored_bars: IntArray
    ignored_flow: IntArray
    series_break: BoolArray  # a break cut the window: fewer usable bars than loaded ones


def _window_sums(values: IntArray, lo: IntArray, hi: IntArray, clamp: int | None) -> IntArray:
    """sum(values[lo:hi]) for every (lo, hi), exact: Python integers when int64 could overflow."""
    big = values.size and float(np.abs(values).sum(dtype=np.float64)) >= 2.0**62
    cum: Any = np.cumsum(values.astype(object) if big else values, dtype=object if big else np.int64)
    cum = np.concatenate((np.zeros(1, dtype=cum.dtype), cum))
    out = cum[hi] - cum[lo]
    if clamp is not None:
        out = np.minimum(out, clamp)
    return np.asarray(out, dtype=np.int64)


def _epochs(grid: IntArray, splits: Sequence[tuple[int, float]]) -> list[tuple[int, int]]:
    """Grid index ranges over which the set of applied splits (ex <= T) does not change."""
    cuts = sorted({0, grid.shape[0], *(int(np.searchsorted(grid, ex, "left")) for ex, _ in splits)})
    return [(a, b) for a, b in itertools.pairwise(cuts) if a < b]


def features(market: MarketArrays, grid: IntArray, cfg: NaiveFlowTrendConfig) -> FeatureGrid:
    """Every minute's features: bars with ts < T, flow with ts in [T - lookback, T)."""
    shape = (len(market.symbols), grid.shape[0])
    w, lookback = cfg.sma_window, cfg.flow_lookback_minutes * MINUTE_US
    close, avg = np.full(shape, np.nan), np.full(shape, np.nan)
    last_ts, bars = np.full(shape, -1, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    bull, bear = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    ign_bars, ign_flow = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    cut = np.zeros(shape, dtype=np.bool_)
    for j in range(shape[0]):
        ts, raw = market.bar_ts[j], market.bar_close[j]
        k = np.searchsorted(ts, grid, "left")
        bad = market.column("bar_bad", j)
        lo = np.where(k >= w, ts[np.maximum(k - w, 0)] if ts.size else 0, np.iinfo(np.int64).min)
        ign_bars[j] = np.searchsorted(bad, grid, "left") - np.searchsorted(bad, lo, "left")
        if ts.size:
            last_ts[j] = np.where(k > 0, ts[np.maximum(k - 1, 0)], -1)
        splits = market.column("splits", j)
        for a, b in _epochs(grid, splits):
            c = raw / dq.split_factor_array(ts, splits, int(grid[a]))
            kk = k[a:b]
            usable = dq.usable_bars(c, kk, w)
            bars[j, a:b] = usable
            cut[j, a:b] = usable < np.minimum(kk, w)
            if ts.size:  # the last usable close: none when the last bar is bad (above MAX_PRICE)
                close[j, a:b] = np.where(usable > 0, c[np.maximum(kk - 1, 0)], np.nan)
            if ts.size >= w:
                avg[j, a:b] = np.where(usable >= w, sma(c, w)[np.maximum(kk - w, 0)], np.nan)
        fts = market.flow_ts[j]
        lo_f, hi_f = np.searchsorted(fts, grid - lookback, "left"), np.searchsorted(fts, grid, "left")
        bull[j] = _window_sums(market.flow_bull[j], lo_f, hi_f, dq.MAX_SUM_CENTS)
        bear[j] = _window_sums(market.flow_bear[j], lo_f, hi_f, dq.MAX_SUM_CENTS)
        ign_flow[j] = _window_sums(market.column("flow_ignored", j), lo_f, hi_f, None)
    enough = bars >= w
    trend = np.where(enough, trend_code(close, avg, cfg.trend_band_bps), FLAT).astype(np.int8)
    flow = flow_code(bull, bear, cfg.min_flow_premium, cfg.min_flow_ratio)
    return FeatureGrid(bars, close, avg, last_ts, bull, bear, enough, trend, flow, ign_bars, ign_flow, cut)


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


def end_marks(data: MarketArrays, end: datetime) -> dict[str, float]:
    """Symbol -> the close of the last bar before `end` (symbols without one are left out): what
    an open position is marked at when the range ends, the close `status` would use then."""
    cut = to_us(end)
    out: dict[str, float] = {}
    for sym, ts, close in zip(data.symbols, data.bar_ts, data.bar_close, strict=True):
        i = int(np.searchsorted(ts, cut, side="left"))
        if i > 0:
            out[sym] = float(close[i - 1])
    return out
