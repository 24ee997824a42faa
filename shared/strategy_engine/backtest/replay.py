"""The backfill's replay of a range: the tick's own decision code, run only where it can order.

The features of every minute come vectorised from `market_arrays`. Whether a minute can
produce an order depends on one thing more, the symbol's position, and a position changes only
at a fill. So the loop jumps from one order candidate to the next and runs `decide_minute`
there, over the candidate symbols: the strategy, the risk gate, the simulated broker and the
payloads are the tick's own, in the tick's symbol order. Every other minute is a hold, which
touches no account state; its row is built in bulk (`backfill_rows`).

The simulated account is rebuilt at each candidate minute the way the tick rebuilds it from
its tables; the store writes exact decimals (`store.values.exact`), so the numbers the tick
reads back are the numbers this loop keeps in memory.
"""

from __future__ import annotations

import gc
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

import numpy as np

from strategy_engine.backtest.market_arrays import (
    BoolArray,
    FeatureGrid,
    FloatArray,
    IntArray,
    MarketArrays,
    candidates,
    features,
    to_datetime,
)
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core import calendar
from strategy_engine.core.data_quality import split_position
from strategy_engine.core.decide import MinuteInputs, decide_minute
from strategy_engine.core.models import Action, DayState, Decision, Features, Limits, Order, Outcome, Position
from strategy_engine.core.risk import RiskContext
from strategy_engine.core.strategies import StrategySpec
from strategy_engine.core.strategies.naive_flow_trend import NaiveFlowTrendConfig


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
        held = np.where(
            self.position_after != 0, self.position_after * np.nan_to_num(self.features.close), 0.0
        )
        out: FloatArray = self.cash_after + held.sum(axis=0)
        return out


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
        self.acct = _Account(setup.initial_cash)
        self.configs: dict[tuple[str, ...], NaiveFlowTrendConfig] = {}
        # Position changes per symbol, as (grid index, qty): after each minute (fills at i, splits
        # from their first minute on) and as each minute's decision saw it (fills from i + 1).
        self.moves: list[list[tuple[int, float]]] = [[] for _ in market.symbols]
        self.seen: list[list[tuple[int, float]]] = [[] for _ in market.symbols]
        self.cash_moves: list[tuple[int, float]] = []
        # Splits by the first grid minute at or after their ex time: the tick applies a split to
        # the account at its first minute with ex <= T (store.accounts.positions).
        self.splits = sorted(
            (int(np.searchsorted(grid, ex, "left")), ex, j, ratio)
            for j in range(len(market.symbols))
            for ex, ratio in market.column("splits", j)
        )
        self.next_split = 0

    def next_candidate(self, j: int, after: int) -> int:
        arr = self.cands[j][self.acct.state(self.out.symbols[j])]
        p = int(arr.searchsorted(after))
        return arr.item(p) if p < arr.shape[0] else self.grid.shape[0]

    def feature(self, j: int, i: int) -> Features:
        f, ts = self.f, self.f.last_ts.item(j, i)
        close, avg = f.close.item(j, i), f.sma.item(j, i)
        return Features(
            self.out.symbols[j],
            f.bars.item(j, i),
            None if math.isnan(close) else close,
            None if math.isnan(avg) else avg,
            None if ts < 0 else to_datetime(ts),
            f.bull.item(j, i),
            f.bear.item(j, i),
            f.ignored_bars.item(j, i),
            f.ignored_flow.item(j, i),
            bool(f.series_break.item(j, i)),
        )

    def apply_splits(self, through: int) -> None:
        """Apply to the account every split whose first minute is at or before grid index `through`."""
        while self.next_split < len(self.splits) and self.splits[self.next_split][0] <= through:
            i, _, j, ratio = self.splits[self.next_split]
            self.next_split += 1
            p = self.acct.positions.get(sym := self.out.symbols[j])
            if i < self.grid.shape[0] and p is not None and p.qty != 0:
                self.acct.positions[sym] = q = split_position(p, ratio)
                self.moves[j].append((i, q.qty))
                self.seen[j].append((i, q.qty))

    def step(self, i: int, js: list[int]) -> None:
        """One candidate minute: decide_minute over the candidate symbols, as the tick would."""
        s, minute = self.setup, to_datetime(self.grid.item(i))
        feats = {self.out.symbols[j]: self.feature(j, i) for j in js}
        cfg = self.configs.get(syms := tuple(feats))
        if cfg is None:
            cfg = self.configs[syms] = s.config.model_copy(update={"symbols": syms})
        ctx = self.context(i, minute, feats)
        broker = SimulatedBroker(self.acct.cash, self.acct.positions.values(), s.slippage_bps, now=minute)
        inputs = MinuteInputs(s.strategy_id, s.spec, cfg, s.limits, minute, feats)
        decisions, after = decide_minute(inputs, ctx, broker.submit)
        if after is not ctx:  # an order went through
            self.settle(broker, after)
        self.record(i, js, decisions)

    def context(self, i: int, minute: datetime, feats: dict[str, Features]) -> RiskContext:
        """What the tick's gate would see at T: the day state of T's New York date, the account."""
        s, acct = self.setup, self.acct
        today = calendar.trading_date(minute)
        if acct.day is None or acct.day.trading_date != today:
            acct.day = DayState(today)
        return RiskContext(
            minute=minute,
            is_active=s.is_active,
            market_open=True if s.market_open is None else bool(s.market_open[i]),
            last_bar_ts=MappingProxyType({k: v.last_bar_ts for k, v in feats.items() if v.last_bar_ts}),
            max_bar_age_seconds=s.config.max_bar_age_seconds,
            day=acct.day,
            positions=MappingProxyType({k: p.qty for k, p in acct.positions.items()}),
            last_trade_at=MappingProxyType(acct.last_trade),
            buying_power=max(acct.cash, 0.0),
        )

    def settle(self, broker: SimulatedBroker, after: RiskContext) -> None:
        """The account after the minute's fills, as the tick writes it and reads it back."""
        acct = self.acct
        acct.cash = broker.cash
        acct.positions = {p.symbol: Position(p.symbol, p.qty, p.avg_entry_price) for p in broker.positions()}
        acct.day = replace(after.day, notional_today=after.day.notional_today)
        acct.last_trade = dict(after.last_trade_at)

    def record(self, i: int, js: list[int], decisions: list[Decision]) -> None:
        for j, d in zip(js, decisions, strict=True):
            if d.signal.action is Action.HOLD:  # the vectorised classes and the strategy disagree
                raise RuntimeError(
                    f"replay: candidate {d.signal.symbol} at {d.minute} held ({d.signal.reason})"
                )
            self.out.decided[(i, j)] = d
            if d.outcome is Outcome.ORDERED and d.order is not None:
                self.out.fills.append((i, j, d.order))
                p = self.acct.positions.get(d.signal.symbol)
                self.moves[j].append((i, 0.0 if p is None else p.qty))
                self.seen[j].append((i + 1, 0.0 if p is None else p.qty))
                self.cash_moves.append((i, self.acct.cash))

    def run(self, on_progress: Callable[[float], None] | None) -> Replay:
        m = self.grid.shape[0]
        heap = [(self.next_candidate(j, 0), j) for j in range(len(self.out.symbols))]
        heapq.heapify(heap)
        reported = 0
        while heap and heap[0][0] < m:
            i, js = heap[0][0], []
            while heap and heap[0][0] == i:
                js.append(heapq.heappop(heap)[1])
            self.apply_splits(i)
            self.step(i, sorted(js))
            for j in js:
                heapq.heappush(heap, (self.next_candidate(j, i + 1), j))
            if on_progress is not None and i - reported > m // 100:
                reported = i
                on_progress(i / m)
        return self.finish()

    def finish(self) -> Replay:
        out, m = self.out, self.grid.shape[0]
        self.apply_splits(m - 1)
        empty = np.zeros((0, m))
        out.position_after = np.stack([_steps(mv, m, 0.0) for mv in self.moves]) if self.moves else empty
        out.position_before = np.stack([_steps(mv, m, 0.0) for mv in self.seen]) if self.seen else empty
        out.cash_after = _steps(self.cash_moves, m, out.initial_cash)
        return out


def _steps(moves: list[tuple[int, float]], m: int, initial: float) -> FloatArray:
    """A value that changes at given minutes (ascending; the last of equal minutes wins), as its
    value after each minute."""
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
    """Replay every grid minute of the strategy's symbols on a fresh simulated account.

    The cyclic garbage collector is paused meanwhile: the loop keeps every decision it makes (a
    few dozen small objects each) and makes no cycles, so the collector would only rescan them,
    again and again, for about a sixth of the loop's time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Loop(market.select(setup.config.symbols), grid, setup).run(on_progress)
    finally:
        if was_enabled:
            gc.enable()
