"""Workers at once on one minute: 200 strategies, one worker vs two, first minute of a day and an
ordinary minute.

Each worker is a process with its own connection that ticks the same minute (as two overlapping
invocations would); a strategy another worker holds is skipped (`busy`), so the workers share
the minute's strategies between them. Each strategy has its own simulated account (3 symbols),
so nothing but the engine's own rows is shared. The first minute of a day is the one whose
`strategy_state` rows do not exist yet; the ordinary minute is the day's 31st, after its first
minute was ticked (untimed). One worker and two workers tick the same minute on identical
copies of one database (`CREATE DATABASE ... TEMPLATE`), so tables growing from run to run
never favour either; each repetition takes the next synthetic session. The medians are
printed with the speed-up.

Usage: python benchmarks/workers.py [--strategies 200] [--reps 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
import warnings
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from strategy_engine import engine
from strategy_engine.backtest import synthetic
from strategy_engine.core import calendar
from strategy_engine.core.models import Limits
from strategy_engine.seed import save_strategy
from strategy_engine.store import connect, embedded, market
from strategy_engine.store.journal import reset_database
from strategy_engine.store.migrations import migrate

SYMS = ("SPY", "QQQ", "IWM")


def _worker(url: str, minute: datetime, barrier: Any, out: Any) -> None:
    warnings.simplefilter("ignore")
    with connect(url) as s:
        barrier.wait()
        t0 = time.perf_counter()
        result = engine.tick(s, minute)
        out.put(
            (time.perf_counter() - t0, sum(1 for r in result.strategies if r.outcome.value == "processed"))
        )


def _run(url: str, minute: datetime, workers: int) -> tuple[float, int]:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, minute, barrier, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    got = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return max(t for t, _ in got), sum(n for _, n in got)  # wall time of the minute, strategies done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategies", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    june = (date(2025, 6, 2) + timedelta(days=k) for k in range(28))
    days = [d for d in june if calendar.session_bounds(d) is not None][: args.reps + 1]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = embedded.start(Path(tmp) / "pg")
        with connect(base) as admin:
            reset_database(admin, "bench_workers")
        url = embedded.database_url(base, "bench_workers")
        data = synthetic.generate(synthetic.MarketSpec(SYMS, days[0], days[-1], seed=7))
        with connect(url) as s:
            migrate(s)
            for i in range(args.strategies):
                save_strategy(
                    s, f"w{i:03d}", "naive_flow_trend", {"symbols": list(SYMS), "min_flow_premium": 20_000},
                    account=f"acct-{i:03d}", is_active=True, limits=Limits(max_daily_trades=100_000),
                    initial_cash=1e9,
                )  # fmt: skip
            with s.transaction():
                market.insert_bars(s, data.bars)
                market.insert_flow(s, data.flow)
            s.execute("analyze")
        by_day: dict[date, list[datetime]] = {}
        for m in data.minutes:
            by_day.setdefault(calendar.trading_date(m), []).append(m)
        results: dict[tuple[str, int], list[float]] = {}
        for day in days[1 : 1 + args.reps]:  # days[0] gives the first day's minutes their history
            first, ordinary = by_day[day][0], by_day[day][30]
            for workers in (1, 2):
                for kind, minute in (("first minute of the day", first), ("ordinary minute", ordinary)):
                    with connect(base) as admin:
                        reset_database(admin, "bench_workers_run", template="bench_workers")
                    run_url = embedded.database_url(base, "bench_workers_run")
                    if minute == ordinary:
                        _run(run_url, first, 1)  # the day's rows exist, as at any later minute
                    seconds, done = _run(run_url, minute, workers)
                    assert done == args.strategies, (kind, workers, done)
                    results.setdefault((kind, workers), []).append(seconds)
        print(f"workers benchmark: {args.strategies} strategies x 3 symbols, own simulated accounts, "
              f"embedded PostgreSQL, median of {args.reps}")  # fmt: skip
        for kind in ("first minute of the day", "ordinary minute"):
            one, two = (statistics.median(results[(kind, w)]) for w in (1, 2))
            print(
                f"{kind:<24} 1 worker {one * 1000:7.0f} ms ({args.strategies / one:6.1f}/s)  "
                f"2 workers {two * 1000:7.0f} ms ({args.strategies / two:6.1f}/s)  speed-up {one / two:.2f}x"
            )


if __name__ == "__main__":
    main()
