"""Parameter sweep: the range loaded once, every grid point replayed on both cores, ranked by P&L.

The data is loaded once for the widest point (the most symbols, the longest SMA window and
flow lookback; a narrower point reads the tail of the same arrays, exactly what it would have
loaded itself) and handed to two worker processes once each, as numpy arrays. Workers start
from a fresh interpreter (`forkserver`), never a fork of a process holding a database
connection and a progress thread. Like any spawned worker they import the caller's main
module, so a script calling `run_sweep` needs the `if __name__ == "__main__":` guard (the
`strategy-engine` console script has it).

A sweep writes no per-decision rows (N points would write N journals nobody reads); it
records one `backfill_runs` row per point, `status = 'sweep'`, with the point and the sweep id
in `parameters.sweep`, so points can be compared in SQL later.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from strategy_engine.backtest import replay, report
from strategy_engine.backtest.backfill import BackfillRequest, Progress, parameters, plan
from strategy_engine.backtest.market_arrays import (
    IntArray,
    MarketArrays,
    check_budget,
    end_marks,
    load,
    session_grid,
)
from strategy_engine.backtest.replay import ReplaySetup
from strategy_engine.core.errors import InputError
from strategy_engine.core.strategies.naive_flow_trend import NaiveFlowTrendConfig
from strategy_engine.settings import get_settings
from strategy_engine.store import Session
from strategy_engine.store import backfill as store

MAX_POINTS = 500
_WORKER: dict[
    str, tuple[MarketArrays, IntArray, ReplaySetup, dict[str, float]]
] = {}  # what a worker process holds


def parse_axes(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`key=v1,v2,...` per axis; each value is read as JSON (10, 0.2, true) else as text."""
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise InputError(f"invalid --sweep {spec!r}: expected key=v1,v2,...")
        if key in axes:
            raise InputError(f"--sweep {key} given twice")
        unique: dict[str, Any] = {}  # a value given twice would run (and rank) the same point twice
        for v in values.split(","):
            parsed = _value(v.strip())
            unique.setdefault(json.dumps(parsed, sort_keys=True), parsed)
        axes[key] = list(unique.values())
    return axes


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _init(market: MarketArrays, grid: IntArray, setup: ReplaySetup, marks: dict[str, float]) -> None:
    _WORKER["data"] = (market, grid, setup, marks)


def _point(config: NaiveFlowTrendConfig) -> dict[str, Any]:
    market, grid, setup, marks = _WORKER["data"]
    return report.summarise(replay.run(market, grid, replace(setup, config=config)), end_marks=marks)


RESULT_KEYS = (
    "total_pnl",
    "max_drawdown",
    "orders",
    "round_trips",
    "win_rate",
    "profit_factor",
    "sharpe",
    "exposure",
)


def run_sweep(
    s: Session,
    req: BackfillRequest,
    axes: dict[str, list[Any]],
    *,
    workers: int = 2,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every combination of the axes' values over the request's range; results best P&L first."""
    p = plan(s, req)
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    if not points or len(points) > MAX_POINTS:
        raise InputError(f"a sweep has 1 to {MAX_POINTS} points, this one {len(points)}")
    configs = [p.with_overrides(pt) for pt in points]  # every point is validated before any work
    symbols = tuple(sorted({sym for c in configs for sym in c.symbols}))
    window, lookback = max(c.sma_window for c in configs), max(c.flow_lookback_minutes for c in configs)
    grid = session_grid(req.start, req.end)
    # Each worker holds the data and one replay at a time: the budget of one backfill, per worker.
    budget = get_settings().backfill_max_symbol_minutes
    check_budget(len(symbols), grid.shape[0], budget, warmup=window, copies=max(workers, 1))
    data = load(s, symbols, req.start, req.end, window, lookback)
    setup = ReplaySetup(p.strategy_id, p.spec, p.config, p.limits, req.initial_cash, req.slippage_bps)
    marks = end_marks(data, req.end)
    summaries = _replay_all(data, grid, setup, marks, configs, workers, progress)
    sweep_id, rows = uuid.uuid4(), []
    with s.transaction():
        for pt, cfg, summary in zip(points, configs, summaries, strict=True):
            run_id = uuid.uuid4()
            params = {
                **parameters(replace(p, config=cfg), req, True),
                "sweep": {"id": str(sweep_id), "point": pt},
            }
            store.insert_run(
                s,
                run_id,
                p.strategy_id,
                p.name,
                req.start,
                req.end,
                params,
                cfg.fingerprint(),
                summary,
                "sweep",
            )
            result = {k: summary[k] for k in RESULT_KEYS}
            rows.append({**pt, **result, "config_hash": cfg.fingerprint(), "backfill_run_id": str(run_id)})
    rows.sort(key=lambda row: -row["total_pnl"])
    return {
        "sweep_id": str(sweep_id),
        "strategy": p.name,
        "start": req.start.isoformat(),
        "end": req.end.isoformat(),
        "axes": axes,
        "sharpe_note": summaries[0]["sharpe_note"] if summaries else None,
        "results": [{"rank": k, **row} for k, row in enumerate(rows, 1)],
    }


def _replay_all(
    data: MarketArrays,
    grid: IntArray,
    setup: ReplaySetup,
    marks: dict[str, float],
    configs: list[NaiveFlowTrendConfig],
    workers: int,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    """Each config's summary, computed by `workers` processes that each receive the data once."""
    summaries: list[dict[str, Any]] = [{} for _ in configs]
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init, initargs=(data, grid, setup, marks)
    ) as pool:
        futures = {pool.submit(_point, cfg): k for k, cfg in enumerate(configs)}
        for done, fut in enumerate(as_completed(futures), 1):
            summaries[futures[fut]] = fut.result()
            if progress is not None:
                progress("sweep", done / len(configs))
    return summaries
