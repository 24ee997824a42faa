"""Cold start and warm latency of the cloud entry points, against an embedded PostgreSQL.

1. Import time of `functions.main` (and of `functions.lambda_handler`), each in fresh
   interpreters: what an instance pays before it can answer (median and max of --imports runs,
   after one discarded run that writes the bytecode caches).
2. In a fresh interpreter, as a new instance would: the import, then the first request to
   `health` and the first `tick` (the cold start: first connection, calendar, lazy imports), then
   --requests warm requests of each (consecutive session minutes with the simulated broker, one
   strategy on 3 symbols), p50/p95. The functions-framework targets go through
   `functions_framework.create_app` and Flask's test client (no network, no gunicorn); the Lambda
   handler is called with EventBridge Scheduler events and a Function URL event.

Usage: python benchmarks/cold_start.py [--requests 100] [--imports 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAY = date(2025, 6, 13)
SECRET = "bench-secret-0123456789"  # noqa: S105 - the benchmark's throwaway bearer
SYMBOLS = ("SPY", "QQQ", "IWM")


def prepare(folder: Path) -> tuple[str, list[str]]:
    """An embedded server with one strategy and one synthetic session; (url, session minutes)."""
    from strategy_engine.backtest import synthetic
    from strategy_engine.core.models import Limits
    from strategy_engine.seed import save_strategy
    from strategy_engine.store import connect, embedded, market
    from strategy_engine.store.journal import reset_database
    from strategy_engine.store.migrations import migrate

    base = embedded.start(folder / "pg")
    with connect(base) as admin:
        reset_database(admin, "bench_cold")
    url = embedded.database_url(base, "bench_cold")
    data = synthetic.generate(synthetic.MarketSpec(SYMBOLS, DAY, DAY, seed=7))
    with connect(url) as s:
        migrate(s)
        config = {"symbols": list(SYMBOLS), "min_flow_premium": 20_000}
        limits = Limits(max_daily_trades=100_000)
        save_strategy(
            s, "bench", "naive_flow_trend", config, account="bench-sim", is_active=True, limits=limits
        )
        with s.transaction():
            market.insert_bars(s, data.bars)
            market.insert_flow(s, data.flow)
    return url, [t.isoformat() for t in data.minutes]


def import_seconds(module: str, env: dict[str, str]) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=True)  # noqa: S603
    return float(out.stdout.strip())


def child(mode: str, minutes: list[str], n: int) -> dict[str, Any]:
    """Runs in a fresh interpreter: import, first requests, warm requests (milliseconds)."""
    t0 = time.perf_counter()
    if mode == "functions":
        from functions_framework import create_app

        import functions.main  # noqa: F401 - the import being measured

        imported = time.perf_counter() - t0
        source = str(REPO / "functions" / "main.py")
        auth = {"Authorization": f"Bearer {SECRET}"}
        health, tick = (
            create_app(target, source).test_client()  # type: ignore[no-untyped-call]
            for target in ("health", "tick")
        )

        def do_health() -> int:
            return int(health.get("/", headers=auth).status_code)

        def do_tick(minute: str) -> int:
            return int(tick.post("/", headers={**auth, "X-CloudScheduler-ScheduleTime": minute}).status_code)
    else:
        from functions import lambda_handler

        imported = time.perf_counter() - t0
        url = {"version": "2.0", "rawPath": "/health", "headers": {"authorization": f"Bearer {SECRET}"}}
        url["requestContext"] = {"http": {"method": "GET"}, "authorizer": None}

        def do_health() -> int:
            return int(lambda_handler.handler(url, None)["statusCode"])

        def do_tick(minute: str) -> int:
            out = lambda_handler.handler({"source": "scheduler", "minute": minute}, None)
            return 200 if out.get("status") == "ok" else 500

    def timed(call: Any, *args: Any) -> float:
        start = time.perf_counter()
        status = call(*args)
        assert status == 200, status
        return (time.perf_counter() - start) * 1000

    first_health, first_tick = timed(do_health), timed(do_tick, minutes[0])
    warm_health = [timed(do_health) for _ in range(n)]
    warm_tick = [timed(do_tick, m) for m in minutes[1 : n + 1]]
    return {
        "import_ms": imported * 1000,
        "first_health_ms": first_health,
        "first_tick_ms": first_tick,
        "health": warm_health,
        "tick": warm_tick,
    }


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--child", choices=["functions", "lambda"], help=argparse.SUPPRESS)
    parser.add_argument("--minutes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.minutes), args.requests)))
        return
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        url, minutes = prepare(Path(tmp))
        path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)
        env = {**os.environ, "DATABASE_URL": url, "ENGINE_HTTP_SECRET": SECRET, "PYTHONPATH": path}
        env.pop("ENGINE_TRUST_PLATFORM_AUTH", None)
        env.pop("ENGINE_SECRET_ARN", None)
        n = args.requests
        print(
            f"cold start benchmark: embedded PostgreSQL, simulated broker, {len(SYMBOLS)} symbols, "
            f"{n} warm requests"
        )
        for module in ("functions.main", "functions.lambda_handler"):
            import_seconds(module, env)  # writes the bytecode caches
            runs = [import_seconds(module, env) * 1000 for _ in range(args.imports)]
            print(f"import {module:<26} median={statistics.median(runs):7.1f} ms  max={max(runs):7.1f} ms")
        # functions-framework ticks the morning, the Lambda handler the afternoon: no minute twice
        for mode, window in (("functions", minutes[30 : 32 + n]), ("lambda", minutes[200 : 202 + n])):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--requests",
                str(n),
                "--minutes",
                json.dumps(window),
            ]
            out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)  # noqa: S603
            if out.returncode != 0:
                sys.exit(f"{mode} child failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout)
            print(
                f"{mode:<9} cold: import={r['import_ms']:.1f} ms  "
                f"first health={r['first_health_ms']:.1f} ms  first tick={r['first_tick_ms']:.1f} ms"
            )
            for name in ("health", "tick"):
                print(f"{mode:<9} warm {name:<6} p50={p(r[name], 50):6.2f} ms  p95={p(r[name], 95):6.2f} ms")


if __name__ == "__main__":
    main()
