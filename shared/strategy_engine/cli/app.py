"""The `strategy-engine` command line: parse, open a session, call the core, render.

Exit codes and output conventions live in `cli.options` (`run_cli` turns usage errors into one
line and exit 2, as every command's own bad input). Setup commands (account, strategy) are in
`cli.setup`, the questions (trades, decisions, why) in `cli.questions`.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from strategy_engine import engine, manual_trade
from strategy_engine.cli import backfill, questions, setup, views
from strategy_engine.cli.options import DbUrl, DemoFlag, JsonFlag, emit, fail, run_cli, session_for
from strategy_engine.cli.schedule import schedule_app
from strategy_engine.core import calendar
from strategy_engine.core.errors import InputError, Unavailable
from strategy_engine.http import serve
from strategy_engine.store.migrations import migrate


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"strategy-engine {version('agenttrader-strategy-engine')}")
        except PackageNotFoundError:
            print("strategy-engine (not installed)")
        raise typer.Exit(0)


app = typer.Typer(
    help="AgentTrader strategy engine: paper trading, exactly once a minute.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """AgentTrader strategy engine: paper trading, exactly once a minute."""


db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
app.add_typer(setup.account_app, name="account")
app.add_typer(setup.strategy_app, name="strategy")
app.add_typer(schedule_app, name="schedule")
serve.register(app)
backfill.register(app)
questions.register(app)


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
    qty: Annotated[float, typer.Option(help="Shares, > 0 (up to 9 decimals; whole shares to short).")],
    account: Annotated[str, typer.Option(help="Account name.")] = manual_trade.DEFAULT_ACCOUNT,
    client_order_id: Annotated[
        str | None,
        typer.Option("--client-order-id", help="Idempotency key (default: from account, order and minute)."),
    ] = None,
    allow_short: Annotated[
        bool, typer.Option("--allow-short", help="Let a sell open or grow a short (if the account may).")
    ] = False,
    again: Annotated[
        bool,
        typer.Option("--again", help="Place it even if the same manual order went out a few minutes ago."),
    ] = False,
    database_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Place a manual paper order after the account-level checks; re-running it never doubles it."""
    with session_for(database_url) as s:
        order = manual_trade.manual_trade(
            s,
            account,
            symbol,
            side,
            qty,
            client_order_id=client_order_id,
            allow_short=allow_short,
            again=again,
        )
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
def status(
    runs: Annotated[int, typer.Option(help="How many recent engine runs to show (0 to 1000).")] = 10,
    minute: Annotated[
        str | None, typer.Option(help="Mark as of this minute (ISO 8601); default now.")
    ] = None,
    database_url: DbUrl = None,
    demo: DemoFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Accounts (equity at the last close, P&L today), positions, open orders, kill switches, limits, runs."""
    if not 0 <= runs <= 1000:
        fail(f"--runs must be between 0 and 1000, got {runs}", 2)
    try:
        at = calendar.parse_minute(minute) if minute else engine.now_minute()
        calendar.session_bounds(calendar.trading_date(at))  # refuses a date outside the calendar
    except InputError as exc:
        fail(str(exc), 2)
    with session_for(database_url, demo=demo) as s:
        doc = views.collect(s, at, runs)
    emit(doc, as_json, lambda: views.print_status(doc))


@app.command()
def demo(
    database_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Zero-config demo: embedded Postgres, a synthetic session, simulated fills, a report."""
    from strategy_engine.cli import demo as demo_mod

    try:
        summary = demo_mod.run_demo(database_url, quiet=as_json)
    except InputError as exc:
        fail(str(exc), 2)
    except Unavailable as exc:
        fail(str(exc), 3)
    emit(summary, as_json, lambda: demo_mod.print_summary(summary))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The console script. SIGTERM becomes an interrupt (like Ctrl-C) from the very start, so a
    command stopped while it starts or holds the embedded Postgres unwinds and releases it; the
    default SIGTERM would end the process with the server still running."""
    signal.signal(signal.SIGTERM, _interrupt)
    raise SystemExit(run_cli(app))


if __name__ == "__main__":
    main()
