"""The backfill's replay of a range: vectorised features, the tick's own code at order candidates.

A symbol's features at T (its last close, SMA, flow sums, and so its trend and flow classes)
do not depend on the account, so they are computed for every minute at once, with the
strategy's own numpy classifiers and the indicator arithmetic the tick uses (bit-identical).
Whether a minute can produce an order depends on one thing more, the symbol's position, and a
position changes only at a fill. So the loop jumps from one order candidate to the next and
runs `decide_minute` there: the strategy, the risk gate, the simulated broker and the payloads
are the tick's own, in the tick's symbol order. Every other minute is a hold whose row is built
in bulk (`backfill_rows`).

The simulated account is rebuilt at each candidate minute the way the tick rebuilds it from
its tables: cash, positions and the day's notional pass through `numeric` columns there, so
they pass through `stored` here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from strategy_engine import calendar
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.decide import MinuteInputs, decide_minute
from strategy_engine.indicators import sma
from strategy_engine.models import Action, DayState, Decision, Features, Limits, Order, Outcome, Position
from strategy_engine.risk import RiskContext
from strategy_engine.strategies import StrategySpec
from strategy_engine.strategies.naive_flow_trend import (
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


def stored(x: float) -> float:
    """`x` after a round trip through a `numeric` column, as the tick's account makes it.

    PostgreSQL casts float8 to numeric with 15 significant digits, so the tick reads back
    cash, positions and the day's notional rounded that way each minute.
    """
    return float(f"{x:.15g}")


def session_grid(start: datetime, end: datetime) -> IntArray:
    """`calendar.session_minutes(start, end)` as Unix microseconds, one arange per session."""
    parts = [np.empty(0, dtype=np.int64)]
    lo, hi = to_us(start), to_us(end)
    day, last = calendar.trading_date(start), calendar.trading_date(end)
    while day <= last:
        bounds = calendar.session_bounds(day)
        if bounds is not None:
            a, z = max(to_us(bounds[0]), lo), min(to_us(bounds[1]), hi)
            parts.append(np.arange(a, max(a, z), MINUTE_US, dtype=np.int64))
        day += timedelta(days=1)
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
            *(tuple(col[i] for i in idx) for col in (self.bar_ts, self.bar_close)),
            *(tuple(col[i] for i in idx) for col in (self.flow_ts, self.flow_bull, self.flow_bear)),
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
    """Per symbol, the minutes where the strategy orders when (flat, long, short): DESIGN §3."""
    up, down = f.trend == UP, f.trend == DOWN
    bull, bear = f.flow == BULLISH, f.flow == BEARISH
    entry = f.enough & ((up & bull) | (allow_short & down & bear))
    exit_long, exit_short = f.enough & (down | bear), f.enough & (up | bull)
    return [
        (np.flatnonzero(entry[j]), np.flatnonzero(exit_long[j]), np.flatnonzero(exit_short[j]))
        for j in range(f.bars.shape[0])
    ]


@dataclass(frozen=True)
class ReplaySetup:
    strategy_id: object
    spec: StrategySpec
    config: NaiveFlowTrendConfig
    limits: Limits
    initial_cash: float = 100_000.0
    slippage_bps: float = 0.0
    is_active: bool = True  # the backfill replays "as if active"; False reproduces the kill switch
    market_open: BoolArray | None = None  # per grid minute; None: the grid holds session minutes only


@dataclass
class Replay:
    symbols: tuple[str, ...]
    grid: IntArray
    features: FeatureGrid
    initial_cash: float
    decided: dict[tuple[int, int], Decision] = field(default_factory=dict)  # (minute, symbol) index
    fills: list[tuple[int, int, Order]] = field(default_factory=list)
    position_before: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # what each decision saw
    position_after: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    cash_after: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def equity(self) -> FloatArray:
        """Cash plus positions at each minute's last close, after that minute's orders."""
        held = self.position_after != 0
        return self.cash_after + np.where(held, self.position_after * np.nan_to_num(self.features.close), 0).sum(0)


@dataclass
class _Account:
    """The simulated account between candidate minutes, as the tick's tables would hold it."""

    cash: float
    positions: dict[str, Position] = field(default_factory=dict)
    day: DayState | None = None
    last_trade: dict[str, datetime] = field(default_factory=dict)

    def state(self, symbol: str) -> int:
        p = self.positions.get(symbol)
        return 0 if p is None or p.qty == 0 else (1 if p.qty > 0 else 2)


class _Loop:
    def __init__(self, market: MarketArrays, grid: IntArray, setup: ReplaySetup) -> None:
        self.setup, self.grid = setup, grid
        self.f = features(market, grid, setup.config)
        self.cands = candidates(self.f, setup.config.allow_short)
        self.out = Replay(market.symbols, grid, self.f, setup.initial_cash)
        self.acct = _Account(stored(setup.initial_cash))
        self.configs: dict[tuple[str, ...], NaiveFlowTrendConfig] = {}
        self.moves: list[list[tuple[int, float]]] = [[] for _ in market.symbols]
        self.cash_moves: list[tuple[int, float]] = []

    def next_candidate(self, j: int, after: int) -> int:
        arr = self.cands[j][self.acct.state(self.out.symbols[j])]
        p = int(np.searchsorted(arr, after, "left"))
        return int(arr[p]) if p < arr.shape[0] else self.grid.shape[0]

    def feature(self, j: int, i: int) -> Features:
        f, ts = self.f, int(self.f.last_ts[j, i])
        close, avg = float(f.close[j, i]), float(f.sma[j, i])
        return Features(
            self.out.symbols[j],
            int(f.bars[j, i]),
            None if np.isnan(close) else close,
            None if np.isnan(avg) else avg,
            None if ts < 0 else to_datetime(ts),
            int(f.bull[j, i]),
            int(f.bear[j, i]),
        )

    def step(self, i: int, js: list[int]) -> None:
        """One candidate minute: decide_minute over the candidate symbols, as the tick would."""
        s, acct, minute = self.setup, self.acct, to_datetime(int(self.grid[i]))
        today = calendar.trading_date(minute)
        if acct.day is None or acct.day.trading_date != today:
            acct.day = DayState(today)
        feats = {self.out.symbols[j]: self.feature(j, i) for j in js}
        syms = tuple(feats)
        cfg = self.configs.setdefault(syms, s.config.model_copy(update={"symbols": syms}))
        ctx = RiskContext(
            minute=minute,
            is_active=s.is_active,
            market_open=True if s.market_open is None else bool(s.market_open[i]),
            last_bar_ts=MappingProxyType({k: v.last_bar_ts for k, v in feats.items() if v.last_bar_ts}),
            max_bar_age_seconds=s.config.max_bar_age_seconds,
            day=acct.day,
            positions=MappingProxyType({k: p.qty for k, p in acct.positions.items()}),
            last_trade_at=MappingProxyType(dict(acct.last_trade)),
            buying_power=max(acct.cash, 0.0),
        )
        broker = SimulatedBroker(acct.cash, acct.positions.values(), s.slippage_bps, now=minute)
        decisions, after = decide_minute(MinuteInputs(s.strategy_id, s.spec, cfg, s.limits, minute, feats), ctx, broker.submit)
        acct.cash = stored(broker.cash)
        acct.positions = {
            p.symbol: Position(p.symbol, stored(p.qty), stored(p.avg_entry_price)) for p in broker.positions()
        }
        acct.day = replace(after.day, notional_today=stored(after.day.notional_today))
        acct.last_trade = dict(after.last_trade_at)
        for j, d in zip(js, decisions, strict=True):
            if d.signal.action is Action.HOLD:
                raise RuntimeError(f"replay: candidate {d.signal.symbol} at {minute} held ({d.signal.reason})")
            self.out.decided[(i, j)] = d
            if d.outcome is Outcome.ORDERED and d.order is not None:
                self.out.fills.append((i, j, d.order))
                p = acct.positions.get(d.signal.symbol)
                self.moves[j].append((i, 0.0 if p is None else p.qty))
                self.cash_moves.append((i, acct.cash))

    def run(self, on_progress: Callable[[float], None] | None) -> Replay:
        m = self.grid.shape[0]
        heap = [(self.next_candidate(j, 0), j) for j in range(len(self.out.symbols))]
        heapq.heapify(heap)
        reported = 0
        while heap and heap[0][0] < m:
            i, js = heap[0][0], []
            while heap and heap[0][0] == i:
                js.append(heapq.heappop(heap)[1])
            self.step(i, sorted(js))
            for j in js:
                heapq.heappush(heap, (self.next_candidate(j, i + 1), j))
            if on_progress is not None and i - reported > m // 100:
                reported = i
                on_progress(i / m)
        return self.finish()

    def finish(self) -> Replay:
        out, m = self.out, self.grid.shape[0]
        out.position_after = np.stack([_steps(mv, m, 0.0) for mv in self.moves]) if self.moves else np.zeros((0, m))
        out.position_before = np.zeros_like(out.position_after)
        out.position_before[:, 1:] = out.position_after[:, :-1]
        out.cash_after = _steps(self.cash_moves, m, stored(out.initial_cash))
        return out


def _steps(moves: list[tuple[int, float]], m: int, initial: float) -> FloatArray:
    """A value that changes at given minutes, as its value after each minute."""
    if not moves:
        return np.full(m, initial)
    at = np.array([i for i, _ in moves], dtype=np.int64)
    values = np.array([v for _, v in moves], dtype=np.float64)
    seg = np.searchsorted(at, np.arange(m), "right") - 1
    return np.where(seg >= 0, values[np.maximum(seg, 0)], initial)


def run(
    market: MarketArrays,
    grid: IntArray,
    setup: ReplaySetup,
    on_progress: Callable[[float], None] | None = None,
) -> Replay:
    """Replay every grid minute of the strategy's symbols on a fresh simulated account."""
    return _Loop(market.select(setup.config.symbols), grid, setup).run(on_progress)
