"""Setting up without SQL: `account create|list` and `strategy set|enable|disable`.

`strategy set` needs an existing account (`account create` funds it) and never changes
whether a strategy trades unless told (`--enable`): re-running it
to change a config keeps the current state, and a new strategy starts disabled. Limits not
given keep their stored values, or get `seed.DEFAULT_LIMITS` on a new strategy; the limits
saved are printed. `strategy enable|disable` are the switches.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from strategy_engine.cli.options import DbUrl, JsonFlag, emit, fail, session_for
from strategy_engine.cli.views import print_rows
from strategy_engine.core.errors import InputError, NotFound, Unavailable
from strategy_engine.seed import (
    LIMIT_NAMES,
    clean_name,
    create_account,
    limits_doc,
    parse_limits,
    save_strategy,
)

account_app = typer.Typer(
    help="Broker accounts (simulated or Alpaca paper).", no_args_is_help=True, rich_markup_mode=None
)
strategy_app = typer.Typer(
    help="Strategy definitions, their limits, and the kill switch.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
LIMITS_HELP = (
    "Limits JSON object, e.g. '{\"max_notional_per_trade\": 5000}'; null = no limit. Known: "
    + ", ".join(LIMIT_NAMES)
)
ACCOUNT_COLUMNS = ("account", "broker", "equity", "cash", "buying_power", "source", "updated_at")


@account_app.command("create")
def account_create(
    name: Annotated[str, typer.Argument(help="Unique account name.")],
    cash: Annotated[
        float | None, typer.Option(help="Starting cash of a simulated account (default 100000).")
    ] = None,
    broker: Annotated[
        str, typer.Option(help="simulated or alpaca (paper; needs the Alpaca keys).")
    ] = "simulated",
    database_url: DbUrl = None,
) -> None:
    """Create an account; a simulated one is funded with --cash at creation."""
    if broker == "simulated" and cash is None:
        cash = 100_000.0
    try:
        clean = clean_name(name, "account name")
    except InputError as exc:
        fail(str(exc), 2)
    with session_for(database_url) as s:
        create_account(s, clean, broker, cash)
    funded = f" with ${cash:,.2f}" if cash is not None else " (cash and positions come from Alpaca)"
    print(f"created {broker} account {clean}{funded}")


def _broker_figures() -> dict[str, Any] | None:
    """Alpaca's own account figures when the keys are configured; None otherwise or when unreachable."""
    from strategy_engine.settings import get_settings

    st = get_settings()
    if st.alpaca_api_key is None or st.alpaca_secret_key is None:
        return None
    from strategy_engine.brokers.alpaca import AlpacaPaperBroker

    try:
        a = AlpacaPaperBroker.from_settings(st).account()
    except (InputError, Unavailable):
        return None
    return {"cash": a.cash, "buying_power": a.buying_power, "equity": a.equity, "source": "alpaca"}


@account_app.command("list")
def account_list(database_url: DbUrl = None, as_json: JsonFlag = False) -> None:
    """Every account with its cash and equity (Alpaca's figures when its keys are set, else the mirror)."""
    from strategy_engine.store import accounts as acct_store

    with session_for(database_url) as s:
        rows = acct_store.overview(s)
    live = _broker_figures() if any(r[1] == "alpaca" for r in rows) else None
    out = []
    for name, broker, cash, power, equity, updated in rows:
        doc = {"account": name, "broker": broker, "cash": cash, "buying_power": power, "equity": equity}
        doc |= {"source": "mirror", "updated_at": updated}
        if broker == "alpaca" and live is not None:
            doc |= {**live, "updated_at": None}
        out.append(doc)
    emit(out, as_json, lambda: print_rows("accounts", out, ACCOUNT_COLUMNS))


@strategy_app.command("set")
def strategy_set(
    name: Annotated[str, typer.Option(help="Unique strategy name.")],
    account: Annotated[str, typer.Option(help="An existing account's name (see `account create`).")],
    config: Annotated[str, typer.Option(help="Config JSON object.")] = "{}",
    limits: Annotated[str | None, typer.Option(help=LIMITS_HELP)] = None,
    strategy_type: Annotated[str, typer.Option("--type")] = "naive_flow_trend",
    enable: Annotated[
        bool, typer.Option("--enable", help="Also enable it (else its state is kept).")
    ] = False,
    database_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Create or update a strategy; config and limits are validated before anything is saved."""
    try:
        raw = json.loads(config)
    except json.JSONDecodeError as exc:
        fail(f"config is not valid JSON: {exc.msg} at position {exc.pos}", 2)
    try:
        given = parse_limits(limits) if limits is not None else {}
        clean = clean_name(name)
    except InputError as exc:
        fail(str(exc), 2)
    from strategy_engine.store import strategies as strat_store

    with session_for(database_url) as s:
        sid = save_strategy(
            s,
            clean,
            strategy_type,
            raw,
            account=account,
            is_active=True if enable else None,
            limits=given,
            require_keys=True,
            new_account=False,
        )
        row = strat_store.load_all(s, clean)[0]
    saved = limits_doc(row.limits)
    doc = {"id": str(sid), "name": clean, "active": row.definition.is_active, "limits": saved}

    def show() -> None:
        state = "active" if row.definition.is_active else f"inactive (strategy enable {clean} to trade)"
        print(f"saved {clean} ({sid}): {state}")
        print("limits: " + ", ".join(f"{k} {'none' if v is None else f'{v:g}'}" for k, v in saved.items()))

    emit(doc, as_json, show)


@strategy_app.command("enable")
def strategy_enable(name: str, database_url: DbUrl = None) -> None:
    """Let the strategy's orders through (clears the kill switch)."""
    _set_active(name, True, database_url)


@strategy_app.command("disable")
def strategy_disable(name: str, database_url: DbUrl = None) -> None:
    """Kill switch: keep deciding and logging, block every order with strategy_inactive."""
    _set_active(name, False, database_url)


def _set_active(name: str, active: bool, database_url: str | None) -> None:
    from strategy_engine.store import strategies as strat_store

    clean = name.strip()
    with session_for(database_url) as s:
        if not strat_store.set_active(s, clean, active):
            raise NotFound(f"unknown strategy {clean!r}")
    print(f"{clean}: {'active' if active else 'inactive (kill switch on)'}")
