"""What `status`, `trades`, `decisions` and `run` show: one JSON document, or rich tables.

Tables fit the terminal: columns are listed most important first and a column that would not
fit the console's width (80 when piped; `COLUMNS` overrides) is left out, so a narrow terminal
shows the essentials and a wider one shows more. `--json` always carries every column.

`status` marks positions to the last close known (the last bar with ts before now, else the
average entry price, flagged `marked_at_cost`). Equity is cash plus positions at those marks;
P&L today is that equity minus the equity at the previous close, reconstructed from today's
fills (New York date): cash then = cash now + net bought notional today, positions then =
positions now - net bought qty today, marked at each symbol's last close before today.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from strategy_engine.core import calendar
from strategy_engine.core.models import RunResult
from strategy_engine.seed import limits_doc
from strategy_engine.store import Session, engine_runs, queries
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store

RUN_KEYS = (
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
)


def console() -> Console:
    return Console(soft_wrap=False)


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}" if math.isfinite(v) else str(v)
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def fit_table(
    title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str], width: int
) -> RenderableType:
    """The title on its own line (a table's title wraps at the table's width: letter by letter
    over an empty or narrow table), then a table of `columns` (most important first) keeping
    only those that fit `width`; `<title>: none` without rows."""
    if not rows:
        return Text(f"{title}: none", style="table.title")
    table = Table(pad_edge=False)
    kept: list[str] = []
    used = 1
    for col in columns:
        need = max(len(col), *(len(cell(r.get(col))) for r in rows)) + 3
        if kept and used + need > width:
            continue
        kept.append(col)
        used += need
    for col in kept:
        numeric = any(isinstance(r.get(col), int | float) and not isinstance(r.get(col), bool) for r in rows)
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True, overflow="ellipsis")
    for r in rows:
        table.add_row(*(cell(r.get(c)) for c in kept))
    return Group(Text(title, style="table.title"), table)


def print_rows(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    out = console()
    out.print(fit_table(title, rows, columns, out.width))


def _day_start(now: datetime) -> datetime:
    day = calendar.trading_date(now)
    return datetime(day.year, day.month, day.day, tzinfo=calendar.NEW_YORK)


def _accounts(s: Session, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(accounts with marked equity and P&L today, positions with marks)."""
    held = acct_store.all_positions(s)
    fills = queries.fills_since(s, _day_start(now))
    symbols = sorted({r[1] for r in held} | {f[1] for f in fills})
    last, prev = queries.last_closes(s, symbols, now), queries.last_closes(s, symbols, _day_start(now))
    positions = []
    for account, symbol, qty, avg in held:
        mark = last[symbol][1] if symbol in last else avg
        positions.append(
            {
                "account": account,
                "symbol": symbol,
                "qty": qty,
                "avg_entry_price": avg,
                "last_close": last[symbol][1] if symbol in last else None,
                "last_close_at": last[symbol][0] if symbol in last else None,
                "market_value": qty * (mark or 0.0),
                "unrealized_pnl": qty * ((mark or 0.0) - (avg or 0.0)),
                "marked_at_cost": symbol not in last,
            }
        )
    out = []
    for name, broker, cash, buying_power, mirror_equity, updated_at in acct_store.overview(s):
        mine = [p for p in positions if p["account"] == name]
        today = {f[1]: f for f in fills if f[0] == name}
        pnl = 0.0
        for sym in {p["symbol"] for p in mine} | set(today):
            now_qty = next((p["qty"] for p in mine if p["symbol"] == sym), 0.0)
            _, _, bought_qty, bought_notional = today.get(sym, (name, sym, 0.0, 0.0))
            mark = next((p["market_value"] / p["qty"] for p in mine if p["symbol"] == sym and p["qty"]), None)
            mark = mark if mark is not None else (last[sym][1] if sym in last else 0.0)
            before = prev[sym][1] if sym in prev else mark
            pnl += now_qty * mark - (now_qty - bought_qty) * before - bought_notional
        equity = None if cash is None else cash + sum(p["market_value"] for p in mine)
        out.append(
            {
                "account": name,
                "broker": broker,
                "cash": cash,
                "equity": equity,
                "pnl_today": round(pnl, 2) if cash is not None else None,
                "positions": len(mine),
                "buying_power": buying_power,
                "broker_equity": mirror_equity,
                "updated_at": updated_at,
            }
        )
    return out, positions


def collect(s: Session, now: datetime, runs: int = 10) -> dict[str, Any]:
    """The status document: accounts, positions, open orders, strategies (limits, kill switch), runs."""
    day = calendar.trading_date(now)
    accounts, positions = _accounts(s, now)
    limits = {r.definition.name: r.limits for r in strat_store.load_all(s)}
    owners = queries.strategy_accounts(s)
    return {
        "as_of": now.isoformat(),
        "trading_date": day.isoformat(),
        "market_open": calendar.is_open(now),
        "accounts": accounts,
        "positions": positions,
        "open_orders": queries.open_orders(s),
        "strategies": [
            {
                "name": r[0],
                "account": owners.get(r[0]),
                "active": r[1],
                "kill_switch": not r[1],
                "trades_today": r[2],
                "notional_today": r[3],
                "last_trade_at": r[4],
                "last_run_minute": r[5],
                "limits": limits_doc(limits[r[0]]) if r[0] in limits else None,
            }
            for r in strat_store.day_states(s, day)
        ],
        "runs": [dict(zip(RUN_KEYS, r, strict=True)) for r in engine_runs.recent_runs(s, runs)],
    }


def print_status(doc: dict[str, Any]) -> None:
    out = console()
    w = out.width
    market = "open" if doc["market_open"] else "closed"
    out.print(f"as of {doc['as_of']}  trading date {doc['trading_date']}  market {market}")
    out.print(
        fit_table(
            "accounts (equity: cash + positions at the last close)",
            doc["accounts"],
            ("account", "equity", "pnl_today", "cash", "positions", "broker", "buying_power", "updated_at"),
            w,
        )
    )
    out.print(
        fit_table(
            "positions",
            doc["positions"],
            (
                "symbol",
                "qty",
                "last_close",
                "unrealized_pnl",
                "account",
                "avg_entry_price",
                "market_value",
                "last_close_at",
            ),
            w,
        )
    )
    out.print(
        fit_table(
            "open orders",
            doc["open_orders"],
            ("symbol", "side", "qty", "status", "account", "strategy", "time"),
            w,
        )
    )
    strategies = [
        {
            **{k: v for k, v in st.items() if k != "limits"},
            "kill_switch": "ON" if st["kill_switch"] else "off",
        }
        for st in doc["strategies"]
    ]
    out.print(
        fit_table(
            "strategies",
            strategies,
            (
                "name",
                "kill_switch",
                "trades_today",
                "notional_today",
                "account",
                "last_run_minute",
                "last_trade_at",
            ),
            w,
        )
    )
    for st in doc["strategies"]:
        lim = st["limits"] or {}
        text = ", ".join(f"{k} {'none' if v is None else f'{v:g}'}" for k, v in lim.items())
        out.print(f"limits of {st['name']}: {text}", overflow="fold")
    out.print(
        fit_table(
            "last runs",
            doc["runs"],
            ("minute", "status", "orders", "blocked", "failed", "trigger", "decisions", "duration_ms"),
            w,
        )
    )


def print_run(result: RunResult) -> None:
    doc = result.as_json()
    out = console()
    out.print(f"run {doc['run_id']} minute {doc['minute']} status {doc['status']} orders {doc['orders']}")
    if doc["strategies"]:
        out.print(
            fit_table(
                "strategies",
                doc["strategies"],
                ("strategy", "outcome", "decisions", "orders", "blocked", "failed", "error"),
                out.width,
            )
        )
