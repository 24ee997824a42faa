"""What every command shares: the common options and the error-to-exit-code convention.

Every failure the engine knows about becomes one readable line on stderr and an exit code:
2 bad input, 3 a dependency unavailable (retry), 1 anything else. `--json` prints exactly one
JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer

from strategy_engine.core.data_quality import finite
from strategy_engine.core.errors import EngineError, InputError, Unavailable
from strategy_engine.runtime import open_session
from strategy_engine.store import Session

DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Postgres URL (else DATABASE_URL, else the embedded server)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def session_for(url: str | None) -> Iterator[Session]:
    """Open a session and turn engine errors into one line and an exit code."""
    try:
        with open_session(url) as s:
            yield s
    except InputError as exc:
        fail(str(exc), 2)
    except Unavailable as exc:
        fail(str(exc), 3)
    except EngineError as exc:
        fail(str(exc), 1)


def emit(doc: Any, as_json: bool, render: Callable[[], None]) -> None:
    """`doc` as one JSON document (NaN and infinities as null: strict JSON), else `render()`."""
    if as_json:
        sys.stdout.write(json.dumps(finite(doc), default=str, allow_nan=False) + "\n")
    else:
        render()
