"""`strategy-engine demo`: the whole system on one synthetic session, with nothing configured.

It starts the embedded Postgres (or uses the server of `--database-url`), creates a fresh
`strategy_engine_demo` database there, migrates it, seeds a strategy with limits tight enough
for the risk gate to block, a simulated account and one deterministic synthetic session (with
a feed outage), then runs every minute of the session through the real tick. It ends with a backfill of the
same session (the tick's own code, so the same P&L) for its HTML report, written to
`reports/demo.html` under the current folder, and explains the risk codes that blocked most.

One demo at a time per server: the demo holds an advisory lock on the server's `postgres`
database while it runs (it drops and recreates its database, which would cut another demo off);
a second demo says so in one line (exit 3) instead of failing half-way.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from strategy_engine import engine
from strategy_engine.backtest import synthetic
from strategy_engine.cli.explain import first_failure
from strategy_engine.cli.options import DEMO_DB, invoked_as
from strategy_engine.cli.views import fit_table
from strategy_engine.core.errors import Unavailable
from strategy_engine.core.models import Limits
from strategy_engine.runtime import connect_to, resolve_database_url
from strategy_engine.seed import save_strategy
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import connect, embedded, journal, market, queries, redact_url
from strategy_engine.store.migrations import migrate

DEMO_STRATEGY = "demo-naive-flow-trend"
REPORT = Path("reports") / "demo.html"
DEMO_DAY = date(2025, 6, 13)
INITIAL_CASH = 100_000.0
DEMO_CONFIG: dict[str, Any] = {
    "symbols": ["IWM", "QQQ", "SPY"],
    "sma_window": 20,
    "min_flow_premium": 20_000,
    "min_flow_ratio": 0.2,
    "order_qty": 10,
}
DEMO_LIMITS = Limits(
    max_daily_trades=40,
    max_position_size=20,
    max_notional_per_trade=5_000,
    max_notional_per_day=150_000,
    max_open_positions=2,
    cool_down_minutes=10,
)
OUTAGE = (datetime(2025, 6, 13, 17, 0, tzinfo=UTC), datetime(2025, 6, 13, 17, 12, tzinfo=UTC))


class DemoRunning(Unavailable):
    """Another demo holds this server's demo lock."""


def run_demo(database_url: str | None = None, *, quiet: bool = False) -> dict[str, Any]:
    base, is_embedded = resolve_database_url(database_url)
    with connect(base) as admin:  # held open: the demo lock lives as long as this connection
        if not queries.try_session_lock(admin, DEMO_DB):
            raise DemoRunning("another demo is running on this database server: wait for it to finish")
        journal.reset_database(admin, DEMO_DB)
        return _run(base, is_embedded, database_url, quiet)


def _run(base: str, is_embedded: bool, database_url: str | None, quiet: bool) -> dict[str, Any]:
    url = embedded.database_url(base, DEMO_DB)
    data = synthetic.generate(
        synthetic.MarketSpec(DEMO_CONFIG["symbols"], DEMO_DAY, DEMO_DAY, seed=11, outages=(OUTAGE,))
    )
    with connect_to(url) as s:
        migrate(s)
        sid = save_strategy(
            s,
            DEMO_STRATEGY,
            "naive_flow_trend",
            DEMO_CONFIG,
            account="demo-sim",
            is_active=True,
            limits=DEMO_LIMITS,
            initial_cash=INITIAL_CASH,
        )
        with s.transaction():
            market.insert_bars(s, data.bars)
            market.insert_flow(s, data.flow)
        orders = 0
        with Progress(
            TextColumn("[bold]tick"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[t]}"),
            TextColumn("orders {task.fields[orders]}"),
            TimeElapsedColumn(),
            disable=quiet,
        ) as progress:
            task = progress.add_task("tick", total=len(data.minutes), t="", orders=0)
            for minute in data.minutes:
                result = engine.tick(s, minute, trigger="demo")
                orders += result.orders
                progress.update(task, advance=1, t=minute.strftime("%H:%M"), orders=orders)
        doc = _summary(s, sid, data, url, base if is_embedded else None)
        doc.update(_report(s))
        doc["top_blocks"] = [
            {"risk_code": b["risk_code"], "decisions": b["n"], "example": _explain(b)}
            for b in sorted(queries.blocked_examples(s, sid), key=lambda b: -b["n"])
        ]
    doc["next_commands"] = _next_commands(database_url)
    return doc


def _explain(block: dict[str, Any]) -> str:
    text = first_failure(block["payload"] or {}, block["symbol"], block["qty"])
    return f"{block['minute']:%H:%M} UTC {text or block['risk_code']}"


def _report(s: Any) -> dict[str, Any]:
    """Backfill the demo session (same code as the tick) for its HTML report; where it went."""
    from strategy_engine.backtest.backfill import parse_request, run_backfill

    start = datetime(DEMO_DAY.year, DEMO_DAY.month, DEMO_DAY.day, 13, 30, tzinfo=UTC)
    req = parse_request(
        {
            "strategy": DEMO_STRATEGY,
            "start": start,
            "end": start + timedelta(hours=7),
            "initial_cash": INITIAL_CASH,
            "report_path": str(REPORT.resolve()),
            "upload_report": False,
        }
    )
    doc = run_backfill(s, req)
    return {"report_path": doc.get("report_path"), "report_error": doc.get("report_error")}


def _next_commands(database_url: str | None) -> list[str]:
    """Commands to paste next, each on one line, starting the CLI the way the demo was started."""
    db = f" --database-url '{redact_url(database_url)}'" if database_url else ""
    cli = invoked_as()
    return [
        f"{cli} status --demo{db}",
        f"{cli} trades --demo{db}",
        f"{cli} decisions --demo --outcome blocked{db}",
        f"{cli} why --demo --strategy {DEMO_STRATEGY} --symbol SPY{db}",
        f"{cli} backfill --demo --strategy {DEMO_STRATEGY} --start {DEMO_DAY}T13:30Z"
        f" --end {DEMO_DAY}T20:00Z --no-report{db}",
    ]


def _summary(
    s: Any, sid: Any, data: synthetic.MarketData, url: str, embedded_url: str | None
) -> dict[str, Any]:
    counts = journal.decision_counts(s, sid)
    found = acct_store.find_account(s, "demo-sim")
    if found is None:
        raise RuntimeError("the demo account vanished")
    bal = acct_store.lock_account(s, found[0].id)
    pos = acct_store.positions(s, found[0].id)
    last = {b[0]: b[5] for b in data.bars}
    equity = (bal.cash if bal else 0.0) + sum(p.qty * last[p.symbol] for p in pos)
    unrealized = sum(p.qty * (last[p.symbol] - p.avg_entry_price) for p in pos)
    reasons: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for reason, outcome, code, n in counts:
        reasons[reason] += n
        outcomes[outcome] += n
        if code:
            blocks[code] += n
    total = equity - INITIAL_CASH
    return {
        "session": DEMO_DAY.isoformat(),
        "minutes": len(data.minutes),
        "decisions": sum(outcomes.values()),
        "orders": outcomes["ordered"],
        "total_pnl": round(total, 2),
        "realized_pnl": round(total - unrealized, 2),
        "unrealized_pnl": round(unrealized, 2),
        "open_positions": {p.symbol: p.qty for p in pos},
        "decisions_by_reason": dict(sorted(reasons.items())),
        "decisions_by_outcome": dict(sorted(outcomes.items())),
        "blocked_by_risk_code": dict(sorted(blocks.items())),
        "database_url": redact_url(url),
        "embedded_data_dir": str(embedded.default_data_dir()) if embedded_url else None,
    }


def print_summary(doc: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"\n[bold]Demo session {doc['session']}[/bold]: {doc['minutes']} minutes, "
        f"{doc['decisions']} decisions, {doc['orders']} orders"
    )
    console.print(
        f"P&L total {doc['total_pnl']:+.2f}  (realized {doc['realized_pnl']:+.2f}, "
        f"unrealized {doc['unrealized_pnl']:+.2f})",
        soft_wrap=True,
    )
    held = ", ".join(f"{k} {v:g}" for k, v in doc["open_positions"].items()) or "none"
    console.print(f"open positions: {held}", soft_wrap=True)
    for title, key in (
        ("decisions by reason", "decisions_by_reason"),
        ("blocked by risk code", "blocked_by_risk_code"),
    ):
        rows = [{"code": k, "count": v} for k, v in doc[key].items()]
        console.print(fit_table(title, rows, ("code", "count"), console.width))
    if doc["top_blocks"]:
        console.print("[bold]why orders were blocked[/bold] (the latest of each top code):")
        for b in doc["top_blocks"]:
            print(f"  {b['risk_code']} x{b['decisions']}: {b['example']}")
    if doc.get("report_path"):
        print(f"report: {doc['report_path']}")
    if doc.get("report_error"):
        print(f"report not written: {doc['report_error']}")
    print(f"database: {doc['database_url']}")
    if doc["embedded_data_dir"]:
        print(f"embedded Postgres data folder: {doc['embedded_data_dir']}")
    print("next (one command per line):")
    for command in doc["next_commands"]:
        print(command)
