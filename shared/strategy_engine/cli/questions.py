"""Questioning the engine without SQL: `trades`, `decisions` and `why`.

`trades` lists orders (strategy and manual), `decisions` the live journal, newest first; `why`
shows one decision with every risk check, what the gate saw against the limit, in words.
`--since` takes an ISO 8601 time with an offset, or a date (midnight New York).
"""

from __future__ import annotations

from typing import Annotated

import typer

from strategy_engine.cli.explain import why_lines
from strategy_engine.cli.options import DbUrl, DemoFlag, JsonFlag, emit, fail, parse_since, session_for
from strategy_engine.cli.views import print_rows
from strategy_engine.core import calendar
from strategy_engine.core.errors import InputError
from strategy_engine.core.models import Outcome
from strategy_engine.store import queries

Strategy = Annotated[str | None, typer.Option(help="Only this strategy.")]
Symbol = Annotated[str | None, typer.Option(help="Only this symbol, e.g. SPY.")]
Since = Annotated[str | None, typer.Option(help="From this time (ISO 8601 with offset) or date on.")]
Limit = Annotated[int, typer.Option(help="At most this many rows (1 to 10000).")]
TRADE_COLUMNS = (
    "time", "symbol", "side", "qty", "price", "status", "strategy", "account", "source", "filled_qty",
    "client_order_id", "error",
)  # fmt: skip
DECISION_COLUMNS = ("minute", "symbol", "action", "outcome", "risk_code", "reason", "strategy", "qty")


def _filters(symbol: str | None, since: str | None, limit: int) -> tuple[str | None, object]:
    if not 1 <= limit <= 10_000:
        fail(f"--limit must be between 1 and 10000, got {limit}", 2)
    if symbol is not None and not symbol.strip():
        fail("--symbol must not be empty (leave it out for every symbol)", 2)
    try:
        return (symbol.strip().upper() if symbol else None), parse_since(since)
    except InputError as exc:
        fail(str(exc), 2)


def trades(
    strategy: Strategy = None,
    symbol: Symbol = None,
    since: Since = None,
    limit: Limit = 50,
    database_url: DbUrl = None,
    demo: DemoFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Orders, newest first: time, symbol, side, qty, fill price, status, strategy, account."""
    sym, t = _filters(symbol, since, limit)
    with session_for(database_url, demo=demo) as s:
        rows = queries.trades(s, strategy=strategy, symbol=sym, since=t, limit=limit)  # type: ignore[arg-type]
    emit(rows, as_json, lambda: print_rows(f"trades ({len(rows)}, newest first)", rows, TRADE_COLUMNS))


def decisions(
    strategy: Strategy = None,
    symbol: Symbol = None,
    since: Since = None,
    outcome: Annotated[str | None, typer.Option(help="held, blocked, ordered or failed.")] = None,
    limit: Limit = 50,
    database_url: DbUrl = None,
    demo: DemoFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Live decisions, newest first: minute, symbol, action, outcome, risk code, reason."""
    sym, t = _filters(symbol, since, limit)
    wanted = outcome.strip().lower() if outcome is not None else None
    if wanted is not None and wanted not in {o.value for o in Outcome}:
        fail(f"invalid --outcome {outcome!r}: held, blocked, ordered or failed", 2)
    with session_for(database_url, demo=demo) as s:
        # one row more than shown: whether there are more to say so
        rows = queries.decisions(s, strategy=strategy, symbol=sym, since=t, outcome=wanted, limit=limit + 1)  # type: ignore[arg-type]
    more, rows = len(rows) > limit, rows[:limit]

    def show() -> None:
        print_rows(f"decisions ({len(rows)}, newest first)", rows, DECISION_COLUMNS)
        if more:
            print(
                f"more decisions exist: narrow with --since/--symbol/--outcome or raise --limit (now {limit})"
            )

    emit(rows, as_json, show)


def why(
    strategy: Annotated[str, typer.Option(help="Strategy name.")],
    symbol: Annotated[str, typer.Option(help="Symbol, e.g. SPY.")],
    minute: Annotated[
        str | None, typer.Option(help="Decision minute (ISO 8601); default the latest.")
    ] = None,
    database_url: DbUrl = None,
    demo: DemoFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Why a strategy did (not) trade a symbol: the decision and every risk check, in words."""
    try:
        t = calendar.parse_minute(minute) if minute else None
    except InputError as exc:
        fail(str(exc), 2)
    sym, name = symbol.strip().upper(), strategy.strip()
    if not sym:
        fail("--symbol must not be empty", 2)
    from strategy_engine.store import strategies as strat_store

    with session_for(database_url, demo=demo) as s:
        known = bool(name) and bool(strat_store.load_all(s, name))
        d = queries.decision(s, name, sym, t) if known else None
    if not known:
        fail(f"unknown strategy {name!r} (see `status` for the strategies)", 2)
    if d is None:
        at = f" at {t.isoformat()}" if t else ""
        fail(f"no live decision of strategy {name!r} for {sym}{at}", 2)

    def show() -> None:
        if t is None:
            print(
                "the latest decision that proposed an order:"
                if d["action"] != "hold"
                else f"no decision of {name} proposed an order for {sym}: the latest (a hold):"
            )
        print("\n".join(why_lines(d)))

    emit(d, as_json, show)


def register(app: typer.Typer) -> None:
    for fn in (trades, decisions, why):
        app.command(fn.__name__)(fn)
