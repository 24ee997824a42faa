"""Deterministic synthetic market data: 1-minute bars and options flow for real NYSE sessions.

Prices follow a random walk whose drift switches between regimes (down, flat, up); options
flow leans bullish in up regimes and bearish in down ones, so Naive Flow + Trend both enters
and exits. The same seed gives the same rows on any machine (numpy's PCG64). The demo, the
tests and the benchmarks all draw from here, with knobs for the awkward cases: missing bars
and feed outages (stale data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from strategy_engine.core import calendar

BASE_PRICES = {"SPY": 520.0, "QQQ": 440.0, "IWM": 205.0}


@dataclass(frozen=True)
class MarketSpec:
    symbols: Sequence[str]
    start: date
    end: date  # inclusive
    seed: int = 7
    sigma: float = 0.0007  # per-minute log-return volatility
    drift: float = 0.00025  # per-minute drift magnitude in a trending regime
    regime_minutes: float = 45.0  # mean regime length
    flow_rate: float = 0.6  # flow events per symbol-minute
    flow_bias: float = 0.35  # how far a regime tilts flow toward its direction
    missing_bar_prob: float = 0.0
    outages: Sequence[tuple[datetime, datetime]] = field(default_factory=tuple)  # no bars in [a, b)


@dataclass(frozen=True)
class MarketData:
    bars: list[tuple[str, datetime, float, float, float, float, int]]
    flow: list[tuple[datetime, str, str, str, int | None, float | None, float | None]]
    minutes: list[datetime]


def _session_minutes(start: date, end: date) -> list[datetime]:
    bounds_start = calendar.session_bounds_or_day_start(start)
    bounds_end = calendar.session_bounds_or_day_start(end + timedelta(days=1))
    return calendar.session_minutes(bounds_start, bounds_end)


def generate(spec: MarketSpec) -> MarketData:
    minutes = _session_minutes(spec.start, spec.end)
    bars: list[tuple[str, datetime, float, float, float, float, int]] = []
    flow: list[tuple[datetime, str, str, str, int | None, float | None, float | None]] = []
    n = len(minutes)
    for k, sym in enumerate(spec.symbols):
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(k,)))
        regime = _regimes(rng, n, spec.regime_minutes)
        rets = rng.normal(0.0, spec.sigma, n) + regime * spec.drift
        base = BASE_PRICES.get(sym, 50.0 + 10.0 * (k % 40))
        close = np.round(base * np.exp(np.cumsum(rets)), 2)
        opens = np.round(np.concatenate(([base], close[:-1])), 2)
        spread = np.round(np.abs(rng.normal(0, spec.sigma * base, n)), 2)
        vol = rng.integers(1_000, 50_000, n)
        keep = rng.random(n) >= spec.missing_bar_prob
        for i, ts in enumerate(minutes):
            if not keep[i] or any(a <= ts < b for a, b in spec.outages):
                continue
            hi = max(opens[i], close[i]) + spread[i]
            lo = min(opens[i], close[i]) - spread[i]
            bars.append((sym, ts, float(opens[i]), float(hi), float(lo), float(close[i]), int(vol[i])))
        flow.extend(_flow(rng, sym, minutes, regime, spec))
    return MarketData(bars, flow, minutes)


def _regimes(rng: np.random.Generator, n: int, mean_len: float) -> np.ndarray:
    out = np.empty(n, dtype=np.float64)
    i = 0
    while i < n:
        length = max(5, int(rng.exponential(mean_len)))
        out[i : i + length] = rng.choice((-1.0, 0.0, 1.0))
        i += length
    return out


def _flow(
    rng: np.random.Generator, sym: str, minutes: list[datetime], regime: np.ndarray, spec: MarketSpec
) -> list[tuple[datetime, str, str, str, int | None, float | None, float | None]]:
    counts = rng.poisson(spec.flow_rate, len(minutes))
    out: list[tuple[datetime, str, str, str, int | None, float | None, float | None]] = []
    for i in np.nonzero(counts)[0]:
        for _ in range(int(counts[i])):
            bullish = rng.random() < 0.5 + spec.flow_bias * regime[i]
            sell_side = rng.random() < 0.3
            unknown = rng.random() < 0.1
            # bullish: call bought or put sold; bearish: put bought or call sold
            opt = ("put" if sell_side else "call") if bullish else ("call" if sell_side else "put")
            side = "unknown" if unknown and not sell_side else ("sell" if sell_side else "buy")
            size = int(rng.geometric(1 / 40))
            price = float(np.round(rng.uniform(0.5, 12.0), 2))
            notional = None if rng.random() < 0.2 else round(size * price * 100, 2)
            ts = minutes[i] + timedelta(seconds=int(rng.integers(0, 60)))
            out.append((ts, sym, opt, side, size, price, notional))
    return out


@dataclass(frozen=True)
class MarketColumns:
    """Generated bars and flow as numpy columns (times in Unix µs): millions of rows in seconds.

    The same model as `generate` (regimes, random-walk closes, regime-leaning flow, missing
    bars, outages), drawn column-wise; it is not row-for-row `generate`'s output for a seed.
    """

    symbols: tuple[str, ...]
    minutes: NDArray[np.int64]
    bar_symbol: NDArray[np.int64]  # index into symbols
    bar_ts: NDArray[np.int64]
    bar_open: NDArray[np.float64]
    bar_high: NDArray[np.float64]
    bar_low: NDArray[np.float64]
    bar_close: NDArray[np.float64]
    bar_volume: NDArray[np.int64]
    flow_symbol: NDArray[np.int64]
    flow_ts: NDArray[np.int64]
    flow_call: NDArray[np.bool_]
    flow_side: NDArray[np.int64]  # index into FLOW_SIDES
    flow_size: NDArray[np.int64]
    flow_price: NDArray[np.float64]
    flow_notional: NDArray[np.float64]  # NaN: unknown (premium = size * price * 100)


FLOW_SIDES = ("buy", "sell", "unknown")


def generate_columns(spec: MarketSpec, *, flow_size_mean: float = 40.0) -> MarketColumns:
    """`generate`'s model, vectorised per symbol, for benchmark-sized data.

    `flow_size_mean` (contracts per flow event; `generate` uses 40) sets how often the flow
    premium crosses a strategy's threshold, and so how many orders a strategy places.
    """
    from strategy_engine.backtest.market_arrays import session_grid, to_us

    minutes = session_grid(
        calendar.session_bounds_or_day_start(spec.start),
        calendar.session_bounds_or_day_start(spec.end + timedelta(days=1)),
    )
    n = minutes.shape[0]
    outage = np.zeros(n, dtype=bool)
    for first, stop in spec.outages:
        outage |= (minutes >= to_us(first)) & (minutes < to_us(stop))
    bars: list[list[NDArray[Any]]] = []
    flows: list[list[NDArray[Any]]] = []
    for k, sym in enumerate(spec.symbols):
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(k,)))
        regime = _regimes_vectorised(rng, n, spec.regime_minutes)
        base = BASE_PRICES.get(sym, 50.0 + 10.0 * (k % 40))
        close = np.round(base * np.exp(np.cumsum(rng.normal(0.0, spec.sigma, n) + regime * spec.drift)), 2)
        opens = np.round(np.concatenate(([base], close[:-1])), 2)
        spread = np.round(np.abs(rng.normal(0, spec.sigma * base, n)), 2)
        keep = (rng.random(n) >= spec.missing_bar_prob) & ~outage
        hi, lo = (
            np.round(np.maximum(opens, close) + spread, 2),
            np.round(np.minimum(opens, close) - spread, 2),
        )
        volume = np.asarray(rng.integers(1_000, 50_000, n), dtype=np.int64)
        bars.append(
            [np.full(n, k)[keep], minutes[keep], opens[keep], hi[keep], lo[keep], close[keep], volume[keep]]
        )
        flows.append(_flow_columns(rng, k, minutes, regime, spec, flow_size_mean))
    bar_cols = [np.concatenate([one[col] for one in bars]) for col in range(7)]
    flow_cols = [np.concatenate([one[col] for one in flows]) for col in range(7)]
    return MarketColumns(tuple(spec.symbols), minutes, *bar_cols, *flow_cols)


def _regimes_vectorised(rng: np.random.Generator, n: int, mean_len: float) -> NDArray[np.float64]:
    count = int(n / max(mean_len, 5.0) * 2) + 16
    lengths = np.maximum(5, rng.exponential(mean_len, count).astype(np.int64))
    while lengths.sum() < n:
        lengths = np.concatenate((lengths, np.maximum(5, rng.exponential(mean_len, count).astype(np.int64))))
    values = rng.choice(np.array([-1.0, 0.0, 1.0]), lengths.shape[0])
    return np.repeat(values, lengths)[:n]


def _flow_columns(
    rng: np.random.Generator,
    k: int,
    minutes: NDArray[np.int64],
    regime: NDArray[np.float64],
    spec: MarketSpec,
    size_mean: float,
) -> list[NDArray[Any]]:
    at = np.repeat(np.arange(minutes.shape[0]), rng.poisson(spec.flow_rate, minutes.shape[0]))
    m = at.shape[0]
    bullish = rng.random(m) < 0.5 + spec.flow_bias * regime[at]
    sell_side = rng.random(m) < 0.3
    unknown = rng.random(m) < 0.1
    side = np.where(sell_side, 1, np.where(unknown, 2, 0))
    size = rng.geometric(1 / size_mean, m).astype(np.int64)
    price = np.round(rng.uniform(0.5, 12.0, m), 2)
    notional = np.where(rng.random(m) < 0.2, np.nan, np.round(size * price * 100, 2))
    ts = minutes[at] + rng.integers(0, 60, m) * 1_000_000
    # bullish: call bought or put sold; bearish: put bought or call sold
    return [np.full(m, k), ts, bullish != sell_side, side, size, price, notional]
