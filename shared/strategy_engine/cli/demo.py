"""`strategy-engine demo`: the whole system on one synthetic session, with nothing configured.

It starts the embedded Postgres (or uses the server of `--database-url`), creates a fresh
`strategy_engine_demo` database there, migrates it, seeds a strategy with limits tight enough
for the risk gate to block, a simulated account and one deterministic synthetic session (with
a feed outage), then runs every minute of the session through the real tick.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from strategy_engine import engine
from strategy_engine.backtest import synthetic
from strategy_engine.core.models import Limits
from strategy_engine.runtime import resolve_database_url
from strategy_engine.seed import save_strategy
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import connect, embedded, journal, market, redact_url
from strategy_engine.store.migrations import migrate

DEMO_DB = "strategy_engine_demo"
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


def run_demo(database_url: str | None = None, *, quiet: bool = False) -> dict[str, Any]:
    base, is_embedded = resolve_database_url(database_url)
    with connect(base) as admin:
        journal.reset_database(admin, DEMO_DB)
    url = embedded.database_url(base, DEMO_DB)
    data = synthetic.generate(
        synthetic.MarketSpec(DEMO_CONFIG["symbols"], DEMO_DAY, DEMO_DAY, seed=11, outages=(OUTAGE,))
    )
    with connect(url) as s:
        migrate(s)
        sid = save_strategy(
            s,
            "demo-naive-flow-trend",
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
        return _summary(s, sid, data, url, base if is_embedded else None)


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
        f"unrealized {doc['unrealized_pnl']:+.2f})  open positions {doc['open_positions']}"
    )
    for title, key in (
        ("decisions by reason", "decisions_by_reason"),
        ("blocked by risk code", "blocked_by_risk_code"),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column("code")
        table.add_column("count", justify="right")
        for k, v in doc[key].items():
            table.add_row(k, str(v))
        console.print(table)
    console.print(f"database: {doc['database_url']}")
    if doc["embedded_data_dir"]:
        console.print(f"embedded Postgres data folder: {doc['embedded_data_dir']}")
    console.print("next: strategy-engine status --database-url '<the url above>'")
