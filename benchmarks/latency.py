"""Decision latency at the broker: invoke -> first and last order reaching a loopback Alpaca.

The loopback Alpaca (tests/fake_alpaca, keep-alive connections) runs in a process of its own
(as the real one runs on another host: its work does not share the tick's interpreter) and
waits `--delay` seconds (50 ms by default) before it handles each request, as a network round
trip would; an order "reaches the broker" when the server handles its POST. Orders are
accepted, then filled on the server's next request (the fake's realistic schedule). The tick
runs in-process through the default dependencies (settings from the environment, as deployed)
on an embedded PostgreSQL.
Three setups, each strategy on its own 3 symbols, every symbol wanting to enter long at T:

- 1 strategy x 3 symbols on one account;
- 10 strategies x 3 symbols on one account;
- 10 strategies x 3 symbols on 10 accounts, each account with its own credentials
  (`credentials_ref`) reaching its own Alpaca account at the loopback server.

Each setup runs --reps times on a fresh database and a fresh server; the medians are printed
with the requests per endpoint of one tick (summed over the Alpaca accounts) and the floor
(2 round trips: the reads, then the posts). Before them, one tick of the first setup is run
and printed apart: the first to reach Alpaca in this process, it imports alpaca-py (which
imports pandas and numpy at module level), as the first tick of a new instance does.

The CPU each party spent on a tick is printed too (medians; Linux): the engine's process (all
its threads), the PostgreSQL server (all its processes, background workers included, from the
tick's start to 50 ms after its end, read from /proc at 10 ms resolution) and the
loopback Alpaca. All three share this machine's cores, as in production they would not: the
time beyond the floor is where they wait for one another.

Usage: python benchmarks/latency.py [--reps 5] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

from strategy_engine import engine
from strategy_engine.core.models import Limits
from strategy_engine.seed import save_strategy
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect, embedded
from strategy_engine.store.journal import reset_database
from strategy_engine.store.migrations import migrate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the loopback server lives in tests/
from tests.fake_alpaca import FakeAlpaca

T = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)
SETUPS = (("1 x 3, one account", 1, 1), ("10 x 3, one account", 10, 1), ("10 x 3, ten accounts", 10, 10))


def _ref(i: int) -> str | None:
    return None if i == 0 else f"BENCH{i}"


def _keys(i: int) -> tuple[str, str]:
    return f"PKBENCH{i:04d}", f"bench-secret-{i:04d}"


def _has_credentials_ref(s: Session) -> bool:
    row = s.fetchone(
        "select count(*) from information_schema.columns"
        " where table_name = 'broker_accounts' and column_name = 'credentials_ref'"
    )
    return bool(row and row[0])


def _prepare(s: Session, n_strategies: int, n_accounts: int) -> None:
    migrate(s)
    symbols = []
    for i in range(n_strategies):
        syms = [f"S{3 * i + k:02d}" for k in range(3)]
        symbols += syms
        account = f"alpaca-{i % n_accounts}"
        save_strategy(
            s, f"strat-{i:02d}", "naive_flow_trend", {"symbols": syms}, account=account,
            broker="alpaca", is_active=True, limits=Limits(), initial_cash=100_000.0,
        )  # fmt: skip
    if _has_credentials_ref(s):
        for a in range(n_accounts):
            s.execute(
                "update broker_accounts set credentials_ref = %s where name = %s", (_ref(a), f"alpaca-{a}")
            )
    # 25 falling-then-rising bars and strong bullish flow: every symbol enters long at T.
    s.execute(
        "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
        " select sym, %(t)s - make_interval(mins => k), 100, 100, 100, 100 - k * 0.5, 1000"
        " from unnest(%(syms)s::text[]) sym, generate_series(1, 25) k",
        {"t": T, "syms": symbols},
    )
    s.execute(
        "insert into options_flow (ts, underlying, option_type, side, size, trade_price)"
        " select %s, sym, 'call', 'buy', 500, 5 from unnest(%s::text[]) sym",
        (T - timedelta(minutes=2), symbols),
    )


def _pg_cpu(data_dir: Path) -> float:
    """Seconds of CPU the server whose cluster is `data_dir` has used: the postmaster, the
    children it reaped and those alive (Linux /proc; NaN elsewhere)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:  # ended while read
                continue
            if int(stat.parent.name) == postmaster or int(fields[1]) == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime (proc(5))
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _serve(conn: Connection, n_accounts: int, delay: float) -> None:
    """The loopback Alpaca in a process of its own, as the real one is on another host: its work
    does not share the tick's interpreter (GIL). Answers its URL, then on "clear" forgets the
    requests so far, on "stop" sends (order times, requests, accounts reached) and stops."""
    with FakeAlpaca(*_keys(0), keep_alive=True, delay=delay) as fake:
        fakes = [fake] + [fake.add_account(*_keys(a), f"PA3BENCH{a:04d}") for a in range(1, n_accounts)]
        conn.send(fake.url)
        cpu = 0.0
        while conn.recv() == "clear":
            for f in fakes:
                f.requests.clear()
            cpu = time.process_time()
            conn.send("cleared")
        cpu = time.process_time() - cpu
        times = sorted(t for f in fakes for t in f.order_times)  # perf_counter: CLOCK_MONOTONIC
        requests: Counter[str] = Counter()
        for f in fakes:
            requests.update(f.requests)
        conn.send((times, requests, sum(1 for f in fakes if f.orders), cpu))


def run_once(
    base: str, n_strategies: int, n_accounts: int, delay: float, data_dir: Path
) -> dict[str, object]:
    with connect(base) as admin:
        reset_database(admin, "bench_latency")
    url = embedded.database_url(base, "bench_latency")
    key, secret = _keys(0)
    ours, theirs = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(theirs, n_accounts, delay), daemon=True)
    server.start()
    with connect(url) as s:
        os.environ.update(ALPACA_BASE_URL=ours.recv(), ALPACA_API_KEY=key, ALPACA_SECRET_KEY=secret)
        for a in range(1, n_accounts):
            k, sec = _keys(a)
            os.environ[f"ALPACA_{_ref(a)}_API_KEY"], os.environ[f"ALPACA_{_ref(a)}_SECRET_KEY"] = k, sec
        get_settings.cache_clear()
        _prepare(s, n_strategies, n_accounts)
        ours.send("clear")
        ours.recv()
        pg0, cpu0 = _pg_cpu(data_dir), time.process_time()
        t0 = time.perf_counter()
        # the host clock runs from just after T, so the minute is on time for a real broker
        deps = engine.Deps(clock=lambda: T + timedelta(seconds=1 + time.perf_counter() - t0))
        result = engine.tick(s, T, deps=deps)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    time.sleep(0.05)  # the tick's backends have ended and been reaped: their CPU is the postmaster's
    pg = _pg_cpu(data_dir) - pg0
    ours.send("stop")
    times, requests, accounts_reached, server_cpu = ours.recv()
    server.join(10)
    return {
        "status": result.status,
        "tick_ms": elapsed * 1000,
        "first_ms": (times[0] - t0) * 1000 if times else float("nan"),
        "last_ms": (times[-1] - t0) * 1000 if times else float("nan"),
        "orders": len(times),
        "requests": requests,
        "accounts": accounts_reached,
        "cpu_ms": (cpu * 1000, pg * 1000, server_cpu * 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds added to every request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data_dir = Path(tmp) / "pg"
        base = embedded.start(data_dir)
        rt = args.delay * 1000
        print(f"latency: loopback Alpaca +{rt:.0f} ms per request, keep-alive, median of {args.reps}")
        label, n_strategies, n_accounts = SETUPS[0]
        cold = run_once(base, n_strategies, n_accounts, args.delay, data_dir)
        first, last = float(str(cold["first_ms"])), float(str(cold["last_ms"]))
        print(
            f"{label + ', cold':<22} first order {first:7.1f} ms ({first / rt:4.1f} RT)  last order "
            f"{last:7.1f} ms ({last / rt:4.1f} RT): this process's first tick on Alpaca (imports alpaca-py)"
        )
        for label, n_strategies, n_accounts in SETUPS:
            runs = [run_once(base, n_strategies, n_accounts, args.delay, data_dir) for _ in range(args.reps)]
            first = statistics.median(float(str(r["first_ms"])) for r in runs)
            last = statistics.median(float(str(r["last_ms"])) for r in runs)
            tick = statistics.median(float(str(r["tick_ms"])) for r in runs)
            reqs = runs[-1]["requests"]
            assert isinstance(reqs, Counter)
            per = ", ".join(f"{k} {v}" for k, v in sorted(reqs.items()))
            print(
                f"{label:<22} first order {first:7.1f} ms ({first / rt:4.1f} RT)  last order {last:7.1f} ms "
                f"({last / rt:4.1f} RT)  tick {tick:7.1f} ms  orders {runs[-1]['orders']}  "
                f"Alpaca accounts reached {runs[-1]['accounts']}  status {runs[-1]['status']}"
            )
            print(f"{'':<22} requests {sum(reqs.values())}: {per}")
            engine_cpu, pg_cpu, alpaca_cpu = (
                statistics.median(r["cpu_ms"][k] for r in runs)  # type: ignore[index]
                for k in range(3)
            )
            print(
                f"{'':<22} CPU per tick: engine {engine_cpu:.0f} ms, PostgreSQL {pg_cpu:.0f} ms, "
                f"loopback Alpaca {alpaca_cpu:.0f} ms"
            )


if __name__ == "__main__":
    main()
