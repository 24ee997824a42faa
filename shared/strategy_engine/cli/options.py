"""What every command shares: the common options and the error-to-exit-code convention.

Every failure the engine knows about becomes one readable line on stderr and an exit code:
2 bad input (usage errors included: a missing option, a value of the wrong type), 3 a
dependency unavailable (database, broker, Cloud Scheduler: retry), 1 anything else. `--json`
prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Annotated, Any, NoReturn

import typer
from typer._click import exceptions as click_exc  # typer vendors click: its own exception classes

from strategy_engine.core.data_quality import finite
from strategy_engine.core.errors import EngineError, InputError, Unavailable
from strategy_engine.runtime import open_session
from strategy_engine.store import Session

DEMO_DB = "strategy_engine_demo"

DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Postgres URL (else DATABASE_URL, else the embedded server)."),
]
DemoFlag = Annotated[
    bool,
    typer.Option("--demo", help=f"Read the demo's database ({DEMO_DB} on the same server)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def invoked_as(argv0: str | None = None) -> str:
    """This CLI as the user started it, to print commands they can paste in the same folder:
    `strategy-engine` when that is what PATH finds, else the script's path (relative to the
    current folder when inside it, e.g. `.venv/bin/strategy-engine` after `make demo`), or
    `<python> -m strategy_engine.cli` when run as a module. `argv0` defaults to sys.argv[0]."""
    import os
    import shlex
    import shutil

    arg = sys.argv[0] if argv0 is None else argv0
    name = os.path.basename(arg)
    if not arg or arg in ("-c", "-m") or name.endswith(".py"):
        return f"{shlex.quote(_near(sys.executable))} -m strategy_engine.cli"
    on_path = shutil.which(name)
    if os.sep not in arg or (on_path and os.path.realpath(on_path) == os.path.realpath(arg)):
        return shlex.quote(name)
    return shlex.quote(_near(arg))


def _near(path: str) -> str:
    """`path` relative to the current folder when inside it (./x for a file right here), else absolute."""
    import os

    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    if rel.startswith(os.pardir):
        return full
    return rel if os.sep in rel else f".{os.sep}{rel}"


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def demo_url(explicit: str | None) -> str:
    """The demo database's URL on the server `explicit` / DATABASE_URL / embedded points at."""
    from strategy_engine.runtime import resolve_database_url
    from strategy_engine.store import embedded

    base, _ = resolve_database_url(explicit)
    return embedded.database_url(base, DEMO_DB)


@contextmanager
def session_for(url: str | None, *, demo: bool = False) -> Iterator[Session]:
    """Open a session and turn engine errors into one line and an exit code."""
    try:
        with open_session(demo_url(url) if demo else url) as s:
            yield s
    except InputError as exc:
        fail(str(exc), 2)
    except Unavailable as exc:
        fail(str(exc), 3)
    except EngineError as exc:
        fail(str(exc), 1)


def parse_since(text: str | None) -> datetime | None:
    """`--since`: an ISO 8601 time with an offset, or a date (midnight New York); None if absent."""
    if text is None:
        return None
    from strategy_engine.core import calendar

    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        return calendar.parse_minute(text)
    return datetime(day.year, day.month, day.day, tzinfo=calendar.NEW_YORK)


# Dollar amounts (not prices, which may carry sub-cent digits): rounded to cents in --json.
MONEY_KEYS = frozenset(
    {
        "cash", "equity", "buying_power", "broker_equity", "pnl_today", "market_value",
        "unrealized_pnl", "realized_pnl", "total_pnl", "notional_today", "max_drawdown",
        "initial_cash", "final_equity", "notional",
    }
)  # fmt: skip


def to_json(doc: Any, key: str | None = None) -> Any:
    """`doc` made JSON-ready the one way every `--json` shares: datetimes and dates in ISO 8601,
    amounts under MONEY_KEYS rounded to cents, UUIDs and other objects as text."""
    if isinstance(doc, dict):
        return {str(k): to_json(v, str(k)) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [to_json(v, key) for v in doc]
    if isinstance(doc, datetime | date):
        return doc.isoformat()
    if isinstance(doc, float) and key in MONEY_KEYS and math.isfinite(doc):
        return round(doc, 2)
    if doc is None or isinstance(doc, bool | int | float | str):
        return doc
    return str(doc)


def emit(doc: Any, as_json: bool, render: Callable[[], None]) -> None:
    """`--json`: one JSON document (`to_json`; NaN and infinities as null: strict JSON) on
    stdout; else `render()`."""
    if as_json:
        sys.stdout.write(json.dumps(finite(to_json(doc)), allow_nan=False) + "\n")
    else:
        render()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_cli(app: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run the app and return its exit code; click's usage errors become one stderr line, exit 2.

    Typer renders a usage error as a boxed, multi-line panel; here it is `error: <command>: <what>`
    instead. A bare group (no subcommand) prints its help on stdout and exits 0.
    """
    command = typer.main.get_command(app)
    try:
        rv = command.main(
            args=list(sys.argv[1:] if args is None else args),
            prog_name="strategy-engine",
            standalone_mode=False,
        )
    except click_exc.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return 0
    except click_exc.UsageError as exc:
        where = f"{exc.ctx.command_path.removeprefix('strategy-engine').strip()}: " if exc.ctx else ""
        hint = " (see --help)" if exc.ctx else ""
        print(f"error: {where.lstrip(': ')}{_one_line(exc.format_message())}{hint}", file=sys.stderr)
        return 2
    except click_exc.ClickException as exc:
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except InputError as exc:  # raised outside session_for (e.g. in a callback): same convention
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return rv if isinstance(rv, int) else 0
