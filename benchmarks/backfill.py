"""Backfill throughput on generated data: the computation alone, end to end, and the COPY I/O floor.

Workloads: NYSE 2024 (252 sessions, half days included, 97,740 minutes) x 3 symbols (~293k
symbol-minutes) and x 50 symbols (~4.9M), from `synthetic.generate_columns` with the perf
anchors' shape (flow 0.3 events per symbol-minute, regimes of 240 minutes on average), the
default Naive Flow + Trend config and no limits. It starts its own embedded Postgres in a
temporary folder and prints:

- compute: `replay.run` + `report.summarise` on arrays already in memory (target >= 1M
  symbol-minutes/s);
- encode: the decision rows as COPY text, without the database (part of end to end);
- end to end: `backfill.execute` (load in 3 statements, replay, one backfill_runs row and every
  decision by COPY; no report), `strategy_logs` emptied before each run;
- I/O floor: a plain COPY OUT (binary) of the same bars and flow rows plus a plain COPY IN of
  the same decision rows, already encoded (target: end to end within 2x of it).

Medians of `--repeat` runs (default 3; the 50-symbol workload runs `--repeat-large`, default 1).
Run with `make bench` or `python benchmarks/backfill.py [--symbols 3,50]`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from strategy_engine.backtest import backfill, market_arrays, replay, report, rows, synthetic
from strategy_engine.seed import save_strategy
from strategy_engine.store import Session, connect, embedded
from strategy_engine.store import backfill as store
from strategy_engine.store.journal import reset_database
from strategy_engine.store.migrations import migrate

START, END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
NAMED = ("SPY", "IWM", "QQQ")
CHUNK_ROWS = 200_000


def ANCHORS_SHAPE(syms: tuple[str, ...]) -> synthetic.MarketSpec:
    """perf-anchors' generator shape: sigma 0.07%/min, regimes of 240 min with drift 0.012%/min,
    flow 0.3 events per symbol-minute leaning 0.5 + 0.2 * regime, 9 contracts per event on average."""
    return synthetic.MarketSpec(
        syms,
        date(2024, 1, 1),
        date(2024, 12, 31),
        sigma=0.0007,
        drift=0.00012,
        regime_minutes=240,
        flow_rate=0.3,
        flow_bias=0.2,
    )


def symbols(n: int) -> tuple[str, ...]:
    return NAMED[:n] + tuple(f"S{k:03d}" for k in range(max(0, n - len(NAMED))))


def _time_texts(us: np.ndarray) -> list[str]:
    return [t + "Z" for t in np.datetime_as_string(us.astype("datetime64[us]"), unit="s").tolist()]


def _chunks(lines: Callable[[int, int], list[str]], n: int) -> Iterator[str]:
    for a in range(0, n, CHUNK_ROWS):
        yield "".join(lines(a, min(a + CHUNK_ROWS, n)))


def load_columns(s: Session, c: synthetic.MarketColumns) -> None:
    """Bars and flow into the engine's tables, as COPY text (setup, not measured)."""
    sym = np.array(c.symbols)
    bar_ts, flow_ts = _time_texts(c.bar_ts), _time_texts(c.flow_ts)
    bar_sym, flow_sym = sym[c.bar_symbol].tolist(), sym[c.flow_symbol].tolist()
    sides = np.array(synthetic.FLOW_SIDES)[c.flow_side].tolist()
    opt = np.where(c.flow_call, "call", "put").tolist()
    notional = ["\\N" if math.isnan(x) else repr(x) for x in c.flow_notional.tolist()]

    def bars(a: int, b: int) -> list[str]:
        o, h, lo, cl = (x[a:b].tolist() for x in (c.bar_open, c.bar_high, c.bar_low, c.bar_close))
        rows = zip(bar_sym[a:b], bar_ts[a:b], o, h, lo, cl, c.bar_volume[a:b].tolist(), strict=True)
        return [f"{y}\t{t}\t{v1!r}\t{v2!r}\t{v3!r}\t{v4!r}\t{v}\n" for y, t, v1, v2, v3, v4, v in rows]

    def flow(a: int, b: int) -> list[str]:
        size, price = c.flow_size[a:b].tolist(), c.flow_price[a:b].tolist()
        rows = zip(flow_ts[a:b], flow_sym[a:b], opt[a:b], sides[a:b], size, price, notional[a:b], strict=True)
        return [f"{t}\t{y}\t{k}\t{d}\t{n}\t{p!r}\t{x}\n" for t, y, k, d, n, p, x in rows]

    with s.transaction():
        store.copy_text(
            s,
            "market_data_1m",
            ("symbol", "ts", "open", "high", "low", "close", "volume"),
            _chunks(bars, c.bar_ts.shape[0]),
        )
        cols = ("ts", "underlying", "option_type", "side", "size", "trade_price", "notional")
        store.copy_text(s, "options_flow", cols, _chunks(flow, c.flow_ts.shape[0]))
    s.execute("vacuum analyze public.market_data_1m")
    s.execute("vacuum analyze public.options_flow")


def _median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _empty_journal(s: Session) -> None:
    s.execute("truncate public.strategy_logs, public.backfill_runs")


def workload(base_url: str, n: int, repeat: int, size_mean: float) -> None:
    db = f"bench_backfill_{n}"
    with connect(base_url) as admin:
        reset_database(admin, db)
    t = time.perf_counter()
    cols = synthetic.generate_columns(ANCHORS_SHAPE(symbols(n)), flow_size_mean=size_mean)
    gen_s = time.perf_counter() - t
    with connect(embedded.database_url(base_url, db)) as s:
        migrate(s)
        t = time.perf_counter()
        load_columns(s, cols)
        load_s = time.perf_counter() - t
        name = f"bench-{n}"
        sid = save_strategy(s, name, "naive_flow_trend", {"symbols": list(symbols(n))}, account="bench")
        req = backfill.BackfillRequest(strategy=name, start=START, end=END, report=False)
        p = backfill.plan(s, req)
        cfg = p.config
        data = market_arrays.load(s, cfg.symbols, START, END, cfg.sma_window, cfg.flow_lookback_minutes)
        grid = market_arrays.session_grid(START, END)
        setup = replay.ReplaySetup(sid, p.spec, cfg, p.limits)
        sm = n * grid.shape[0]
        print(
            f"\n== {n} symbols x {grid.shape[0]:,} minutes = {sm:,} symbol-minutes "
            f"(bars {cols.bar_ts.shape[0]:,}, flow events {cols.flow_ts.shape[0]:,}) =="
        )
        print(
            f"setup: generate_columns {gen_s:.2f} s, COPY into tables {load_s:.2f} s, "
            f"flow size mean {size_mean:g} contracts"
        )

        last: list[replay.Replay] = []

        def compute() -> float:
            t0 = time.perf_counter()
            r = replay.run(data, grid, setup)
            report.summarise(r)
            last[:] = [r]
            return time.perf_counter() - t0

        compute_s = _median(compute, repeat)
        r = last[0]
        run_id = uuid.uuid4()
        t = time.perf_counter()
        encoded = list(rows.lines(r, run_id, sid))
        encode_s = time.perf_counter() - t
        fills = len(r.fills)
        print(
            f"compute      {compute_s:8.3f} s  {sm / compute_s / 1e6:6.2f} M symbol-min/s  "
            f"({fills:,} fills, {len(r.decided):,} order candidates)"
        )
        print(
            f"encode rows  {encode_s:8.3f} s  {sm / encode_s / 1e6:6.2f} M rows/s  "
            f"({sum(len(x) for x in encoded) / sm:.0f} bytes/row, no database)"
        )

        timings: list[dict[str, float]] = []

        def end_to_end() -> float:
            _empty_journal(s)
            t0 = time.perf_counter()
            doc = backfill.execute(s, req).doc
            timings.append(doc["timings_ms"])
            return time.perf_counter() - t0

        e2e_s = _median(end_to_end, repeat)
        split = {k: statistics.median(t[k] for t in timings) / 1000 for k in ("load", "replay", "write")}
        print(
            f"end to end   {e2e_s:8.3f} s  {sm / e2e_s / 1e6:6.2f} M symbol-min/s  "
            f"(load {split['load']:.2f} s, replay+summary {split['replay']:.2f} s, "
            f"encode+COPY {split['write']:.2f} s)"
        )

        outs: list[float] = []
        ins: list[float] = []

        def floor() -> float:
            _empty_journal(s)
            store.insert_run(s, run_id, sid, name, START, END, {}, "", {})
            t0 = time.perf_counter()
            store.copy_out_range(s, cfg.symbols, START, END, START - timedelta(minutes=15))
            t1 = time.perf_counter()
            with s.transaction():
                store.write_decision_text(s, iter(encoded))
            t2 = time.perf_counter()
            outs.append(t1 - t0)
            ins.append(t2 - t1)
            return t2 - t0

        floor_s = _median(floor, repeat)
        _empty_journal(s)
        print(
            f"I/O floor    {floor_s:8.3f} s  (COPY OUT bars+flow {statistics.median(outs):.2f} s, "
            f"COPY IN {sm:,} decision rows {statistics.median(ins):.2f} s)"
        )
        print(
            f"end to end / I/O floor = {e2e_s / floor_s:.2f}x  (target <= 2x); "
            f"compute target >= 1M symbol-min/s: {'met' if sm / compute_s >= 1e6 else 'NOT met'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--symbols", default="3,50", help="comma-separated workloads (number of symbols)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--repeat-large", type=int, default=1, help="runs per measurement above 10 symbols")
    ap.add_argument(
        "--flow-size-mean",
        type=float,
        default=9.0,
        help="contracts per flow event (9: the anchors' data; 40: synthetic.generate's, ~7x the orders)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        base = embedded.start(Path(tmp) / "pgdata")
        for n in (int(x) for x in args.symbols.split(",")):
            workload(base, n, args.repeat if n <= 10 else args.repeat_large, args.flow_size_mean)


if __name__ == "__main__":
    main()
