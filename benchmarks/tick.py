"""Warm tick latency (p50/p95) and statements per tick for 3, 50 and 500 symbols.

Runs on its own embedded Postgres (pgserver) in a temporary folder with the simulated broker:
one strategy, one synthetic session loaded, then consecutive decision minutes ticked after a
warm-up. Each size runs with prepared statements (as on the embedded server or a direct
connection) and without (as through a transaction pooler, e.g. Supabase's :6543). Prints one
line per size and mode: latency, statements and database round trips per tick and per
strategy-minute (the strategy's own transaction, claim to commit; `Session.statements` and
`Session.round_trips` count them).

Usage: python benchmarks/tick.py [--minutes 120] [--sizes 3,50,500] [--prepare both|on|off]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path
from typing import Any

from strategy_engine import engine
from strategy_engine.backtest import synthetic
from strategy_engine.core.models import Limits
from strategy_engine.seed import save_strategy
from strategy_engine.store import connect, embedded, market
from strategy_engine.store.journal import reset_database
from strategy_engine.store.migrations import migrate

DAY = date(2025, 6, 13)


def bench(base_url: str, n_symbols: int, minutes: int, prepare: bool) -> dict[str, Any]:
    db = f"bench_tick_{n_symbols}"
    with connect(base_url) as admin:
        reset_database(admin, db)
    url = embedded.database_url(base_url, db)
    syms = tuple(f"S{i:03d}" for i in range(n_symbols))
    data = synthetic.generate(synthetic.MarketSpec(syms, DAY, DAY, seed=7))
    with connect(url, prepare=prepare) as s:
        migrate(s)
        save_strategy(
            s,
            "bench",
            "naive_flow_trend",
            {"symbols": list(syms), "min_flow_premium": 20_000},
            account="bench-sim",
            is_active=True,
            limits=Limits(max_daily_trades=100_000),
            initial_cash=1e9,
        )
        with s.transaction():
            market.insert_bars(s, data.bars)
            market.insert_flow(s, data.flow)
        s.execute("analyze")
        warm, timed = data.minutes[20:30], data.minutes[30 : 30 + minutes]
        for t in warm:
            engine.tick(s, t)
        latencies, statements, trips, orders = [], [], [], 0
        inner: list[tuple[int, int]] = []  # (statements, round trips) of the strategy-minute itself
        own = engine._own

        def counted(conn: Any, *args: Any) -> Any:
            before = (conn.statements, getattr(conn, "round_trips", 0))
            try:
                return own(conn, *args)
            finally:
                inner.append((conn.statements - before[0], getattr(conn, "round_trips", 0) - before[1]))

        engine._own = counted  # type: ignore[assignment]
        try:
            for t in timed:
                before = (s.statements, getattr(s, "round_trips", 0))
                t0 = time.perf_counter()
                result = engine.tick(s, t)
                latencies.append((time.perf_counter() - t0) * 1000)
                statements.append(s.statements - before[0])
                trips.append(getattr(s, "round_trips", 0) - before[1])
                orders += result.orders
        finally:
            engine._own = own
    q = statistics.quantiles(latencies, n=20)
    return {
        "symbols": n_symbols,
        "ticks": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p95_ms": q[18],
        "statements_min": min(statements),
        "statements_max": max(statements),
        "inner_min": min(n for n, _ in inner),
        "inner_max": max(n for n, _ in inner),
        "trips": f"{min(trips)}..{max(trips)}",
        "inner_trips": f"{min(r for _, r in inner)}..{max(r for _, r in inner)}",
        "orders": orders,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--sizes", default="3,50,500")
    parser.add_argument(
        "--prepare",
        choices=("both", "on", "off"),
        default="both",
        help="prepared statements: on (the embedded server, a direct connection), off (a pooler)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = embedded.start(Path(tmp) / "pg")
        print(f"tick benchmark: embedded PostgreSQL, simulated broker, {args.minutes} warm ticks per size")
        modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.prepare]
        for n, prepare in ((int(x), p) for x in args.sizes.split(",") for p in modes):
            r = bench(base, n, args.minutes, prepare)
            print(
                f"{'prepared  ' if prepare else 'unprepared'}  symbols={r['symbols']:>4}  "
                f"ticks={r['ticks']}  p50={r['p50_ms']:.2f} ms  "
                f"p95={r['p95_ms']:.2f} ms  statements/tick={r['statements_min']}..{r['statements_max']}  "
                f"statements/strategy-minute={r['inner_min']}..{r['inner_max']}  "
                f"round trips/tick={r['trips']} (strategy-minute {r['inner_trips']}; 0 = not counted)  "
                f"orders={r['orders']}"
            )


if __name__ == "__main__":
    main()
