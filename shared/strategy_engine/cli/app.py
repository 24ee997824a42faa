"""The `strategy-engine` command line: parse, open a session, call the core, render.

Exit codes and output conventions live in `cli_support`, shared with the commands that other
modules register (backfill, serve, schedule).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from strategy_engine import engine, manual_trade
from strategy_engine.cli import backfill, views
from strategy_engine.cli.options import DbUrl, JsonFlag, emit, fail, session_for
from strategy_engine.cli.schedule import schedule_app
from strategy_engine.core import calendar
from strategy_engine.core.errors import InputError, Unavailable
from strategy_engine.http import serve
from strategy_engine.store.migrations import migrate

app = typer.Typer(
    help="AgentTrader strategy engine: paper trading, exactly once a minute.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
strategy_app = typer.Typer(help="Strategy definitions and the kill switch.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(strategy_app, name="strategy")
app.add_typer(schedule_app, name="schedule")
serve.register(app)
backfill.register(app)


@app.command()
def run(
    minute: Annotated[str | None, typer.Option(help="Decision minute, ISO 8601 with offset.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Only this strategy.")] = None,
    database_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one tick for a minute (default: the current minute)."""
    try:
        t = calendar.parse_minute(minute) if minute else engine.now_minute()
    except InputError as exc:
        fail(str(exc), 2)
    with session_for(database_url) as s:
        result = engine.tick(s, t, trigger="cli", only=strategy)
    emit(result.as_json(), as_json, lambda: views.print_run(result))
    if result.status == "failed":
        raise typer.Exit(3 if result.retryable else 1)


@app.command()
def trade(
    symbol: Annotated[str, typer.Option(help="Ticker, e.g. SPY.")],
    side: Annotated[str, typer.Option(help="buy or sell.")],
    qty: Annotated[float, typer.Option(help="Shares, > 0.")],
    account: Annotated[str, typer.Option(help="Account name.")] = "alpaca-paper",
    database_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Place a manual paper order on the named account; recorded with source 'manual'."""
    with session_for(database_url) as s:
        order = manual_trade.manual_trade(s, account, symbol, side, qty)
    doc = {
        "client_order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "qty": order.qty,
        "status": order.status,
        "filled_qty": order.filled_qty,
        "filled_avg_price": order.filled_avg_price,
    }
    emit(doc, as_json, lambda: print(" ".join(f"{k}={v}" for k, v in doc.items())))


@db_app.command("migrate")
def db_migrate(database_url: DbUrl = None, as_json: JsonFlag = False) -> None:
    """Apply pending migrations (safe to run any number of times)."""
    with session_for(database_url) as s:
        applied = migrate(s)
    emit({"applied": applied}, as_json, lambda: print(f"applied {len(applied)} migration(s): {applied}"))


@app.command()
def status(database_url: DbUrl = None, as_json: JsonFlag = False, runs: int = 10) -> None:
    """Last runs, day counters, positions, balances and kill-switch state."""
    with session_for(database_url) as s:
        doc = views.collect(s, engine.now_minute(), runs)
    emit(doc, as_json, lambda: views.print_status(doc))


@strategy_app.command("enable")
def strategy_enable(name: str, database_url: DbUrl = None) -> None:
    """Let the strategy's orders through (clears the kill switch)."""
    _set_active(name, True, database_url)


@strategy_app.command("disable")
def strategy_disable(name: str, database_url: DbUrl = None) -> None:
    """Kill switch: keep deciding and logging, block every order with strategy_inactive."""
    _set_active(name, False, database_url)


def _set_active(name: str, active: bool, database_url: str | None) -> None:
    from strategy_engine.core.errors import NotFound
    from strategy_engine.store import strategies as strat_store

    with session_for(database_url) as s:
        if not strat_store.set_active(s, name, active):
            raise NotFound(f"unknown strategy {name!r}")
    print(f"{name}: {'active' if active else 'inactive (kill switch on)'}")


@strategy_app.command("set")
def strategy_set(
    name: Annotated[str, typer.Option(help="Unique strategy name.")],
    account: Annotated[str, typer.Option(help="Account name (created as simulated if new).")],
    config: Annotated[str, typer.Option(help="Config JSON object.")] = "{}",
    strategy_type: Annotated[str, typer.Option("--type")] = "naive_flow_trend",
    active: Annotated[bool, typer.Option("--active/--inactive")] = False,
    broker: Annotated[str, typer.Option(help="simulated or alpaca, for a new account.")] = "simulated",
    database_url: DbUrl = None,
) -> None:
    """Create or update a strategy; its config is validated before it is saved."""
    from strategy_engine.seed import save_strategy

    try:
        raw = json.loads(config)
    except json.JSONDecodeError as exc:
        fail(f"config is not valid JSON: {exc.msg} at position {exc.pos}", 2)
    with session_for(database_url) as s:
        sid = save_strategy(s, name, strategy_type, raw, account=account, broker=broker, is_active=active)
    print(f"saved {name} ({sid})")


@app.command()
def demo(
    database_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Zero-config demo: embedded Postgres, a synthetic session, simulated fills, a summary."""
    from strategy_engine.cli import demo as demo_mod

    try:
        summary = demo_mod.run_demo(database_url, quiet=as_json)
    except InputError as exc:
        fail(str(exc), 2)
    except Unavailable as exc:
        fail(str(exc), 3)
    emit(summary, as_json, lambda: demo_mod.print_summary(summary))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
