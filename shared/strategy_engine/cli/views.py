"""What `strategy-engine status` shows, as one JSON document and as rich tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from strategy_engine.core import calendar
from strategy_engine.core.models import RunResult
from strategy_engine.store import Session, journal
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store

console = Console()


def collect(s: Session, now: datetime, runs: int = 10) -> dict[str, Any]:
    day = calendar.trading_date(now)
    return {
        "trading_date": day.isoformat(),
        "market_open": calendar.is_open(now),
        "runs": [
            dict(
                zip(
                    (
                        "id",
                        "trigger",
                        "minute",
                        "status",
                        "strategies",
                        "decisions",
                        "orders",
                        "blocked",
                        "failed",
                        "duration_ms",
                    ),
                    r,
                    strict=True,
                )
            )
            for r in journal.recent_runs(s, runs)
        ],
        "strategies": [
            {
                "name": r[0],
                "active": r[1],
                "kill_switch": not r[1],
                "trades_today": r[2],
                "notional_today": r[3],
                "last_trade_at": r[4],
                "last_run_minute": r[5],
            }
            for r in strat_store.day_states(s, day)
        ],
        "balances": [
            dict(zip(("account", "broker", "cash", "buying_power", "equity", "updated_at"), r, strict=True))
            for r in acct_store.overview(s)
        ],
        "positions": [
            dict(zip(("account", "symbol", "qty", "avg_entry_price"), r, strict=True))
            for r in acct_store.all_positions(s)
        ],
    }


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    if not rows:
        table.add_column("(none)")
        return table
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    return table


def print_status(doc: dict[str, Any]) -> None:
    console.print(f"trading date {doc['trading_date']}  market {'open' if doc['market_open'] else 'closed'}")
    for key in ("strategies", "balances", "positions", "runs"):
        console.print(_table(key, doc[key]))


def print_run(result: RunResult) -> None:
    doc = result.as_json()
    console.print(f"run {doc['run_id']} minute {doc['minute']} status {doc['status']} orders {doc['orders']}")
    if doc["strategies"]:
        console.print(_table("strategies", doc["strategies"]))
