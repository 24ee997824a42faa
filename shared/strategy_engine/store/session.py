"""One database session: a psycopg connection, explicit transactions, a statement counter.

The connection works through Supabase's transaction pooler as well as directly: no prepared
statements (`prepare_threshold=None`) and no session state (no SET, LISTEN or session advisory
locks) outlives a transaction. Every statement goes through `execute`/`copy`, which count them
(the tick's statement count must not grow with the number of symbols) and translate driver
errors into ours once, here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.numeric import FloatLoader

from strategy_engine.core.errors import Busy, DatabaseUnavailable, InputError
from strategy_engine.core.models import RowId

Params = Sequence[Any] | dict[str, Any] | None
INVALID_URL = "the database URL is not a valid postgresql:// URL"
T = TypeVar("T")
# A statement already sent (possibly queued in a pipeline) and how to read its answer: called
# after the pipeline block, it parses the rows. `store` functions named `..._later` return one.
Later = Callable[[], T]


# user:password@ in a URL; password=... in a conninfo or query, the key %-encoded or not (libpq decodes it)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@\s\"']*@", re.IGNORECASE)
_PASSWORD_KEY = "".join(f"(?:{c}|%{ord(c):02x})" for c in "password")
_KV_PASSWORD = re.compile(rf"(?P<head>{_PASSWORD_KEY}\s*(?:=|%3d)\s*)(?:'[^']*'|[^\s&\"']+)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Any text (a driver's message, a URL however malformed) with passwords masked as ***."""
    return _KV_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>***@", text))


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages a person reads."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact_text(url)
    if not password:
        return redact_text(url)
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return redact_text(urlunsplit(parts._replace(netloc=netloc)))


def exact(x: float | None) -> Decimal | None:
    """A float as the decimal that reads back as the same float.

    PostgreSQL casts float8 to numeric with 15 significant digits; money and quantities that the
    next stateless minute reads back must survive the round trip bit for bit (the backfill, which
    never leaves memory, must see the same numbers as the tick).
    """
    return None if x is None else Decimal(repr(float(x)))


def row_id(value: object) -> RowId:
    """A broker_accounts / strategy_definitions key as the driver read it (uuid.UUID or int).

    Raises TypeError for any other type (the migrations refuse such keys).
    """
    if isinstance(value, UUID) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"unsupported key type {type(value).__name__}")


_FRAGMENT_SPLIT = re.compile(r"[@:/\s'\"]+|%00")
MIN_FRAGMENT = 4  # shorter pieces are no secret worth the name (logs.MIN_REDACTED alike)


def _authority(url: str) -> tuple[str, str]:
    """(userinfo, host part) of a URL however malformed: userinfo ends at the LAST '@' (a raw '@'
    in a password is common), the host part is what follows, without its query."""
    rest = url.split("://", 1)[1] if "://" in url else url
    at = rest.rfind("@")
    return (rest[:at], rest[at + 1 :].split("?", 1)[0]) if at >= 0 else ("", rest.split("?", 1)[0])


def url_secrets(url: str) -> list[str]:
    """Every fragment of a URL's password a driver may echo: the password split at the first and
    at the last '@', its pieces between '@', ':', '/', quotes, blanks and %00, each raw and
    percent-decoded (pieces shorter than MIN_FRAGMENT are left out)."""
    userinfo, _ = _authority(url)
    rest = url.split("://", 1)[1] if "://" in url else url
    first = rest[: rest.find("@")] if "@" in rest else ""
    out: set[str] = set()
    for info in (userinfo, first):
        password = info.partition(":")[2]
        for text in (password, *_FRAGMENT_SPLIT.split(password), info.partition("@")[2]):
            for spelling in (text, unquote(text)):
                if len(spelling.strip()) >= MIN_FRAGMENT:
                    out.add(spelling)
    return sorted(out, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` with every fragment of `url`'s password masked, then `redact_text`: for logs."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return redact_text(text)


def location(url: str) -> str:
    """host:port/db of a URL, nothing of its userinfo or query: what an error may name.

    A '@' after a '?' and a '=' is in the query (`?application_name=me@laptop&password=...`), not
    the end of the userinfo: the place is then after the last '@' before the '?'. Any password=
    left (no userinfo at all) is masked as in `redact_text`."""
    userinfo, host = _authority(url)
    query = userinfo.find("?")
    if query >= 0 and "=" in userinfo[query:] and "@" in userinfo[:query]:
        host = userinfo[:query].rsplit("@", 1)[1]
    return redact_text(host) or "?"


def unavailable(exc: Exception, where: str = "", url: str = "") -> DatabaseUnavailable | Busy:
    """Our error for a driver's outage (Busy for a lock timeout: another worker holds the lock).
    Its message names the place only; the driver's own text (libpq echoes pieces of a malformed
    URL) goes, scrubbed, in `detail`, for logs alone."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return Busy("busy: another worker holds the lock")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    err = DatabaseUnavailable(f"database unavailable: {where}" if where else "database unavailable")
    err.detail = scrub(first, url)
    return err


def connect(url: str, *, connect_timeout: int = 10, application_name: str = "strategy-engine") -> Session:
    """A session on `url`. Raises InputError (not a postgresql:// URL, or one libpq cannot parse)
    or DatabaseUnavailable; neither message quotes the driver, whose text may carry the password."""
    if not url.startswith(("postgres://", "postgresql://")):
        raise InputError(INVALID_URL)
    return _open(url, url, connect_timeout, application_name)


def sibling(s: Session, *, application_name: str = "strategy-engine-side") -> Session:
    """A second connection to the database `s` is connected to, for writes that must commit
    while `s` is inside a transaction (the write-ahead order intents). Raises DatabaseUnavailable."""
    return sibling_opener(s, application_name=application_name)()


def sibling_opener(s: Session, *, application_name: str = "strategy-engine-side") -> Callable[[], Session]:
    """`sibling`, split: where to connect is read now (on the thread that owns `s`), the
    connection is opened when the answer is called (on any thread)."""
    info = s.conn.info
    params = {k: v for k, v in info.get_parameters().items() if k != "application_name"}
    if info.password:
        params["password"] = info.password
    conninfo = make_conninfo("", **params)
    return lambda: _open(conninfo, "", 10, application_name)


def _open(conninfo: str, url: str, connect_timeout: int, application_name: str) -> Session:
    """`url`: what errors may name (its location) and must scrub (its password)."""
    try:
        conn = psycopg.connect(
            conninfo,
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=connect_timeout,
            application_name=application_name,
        )
    except psycopg.OperationalError as exc:
        raise unavailable(exc, location(url), url) from None
    except psycopg.ProgrammingError as exc:
        err = InputError(INVALID_URL)
        err.detail = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise err from None
    conn.adapters.register_loader("numeric", FloatLoader)
    return Session(conn)


_SET_TIMEOUTS = """
select set_config('lock_timeout', coalesce(%s, current_setting('lock_timeout')), true),
  set_config('idle_in_transaction_session_timeout',
             coalesce(%s, current_setting('idle_in_transaction_session_timeout')), true)
"""


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{max(1, round(seconds * 1000))}ms"


class Session:
    """`statements` counts statements sent; `round_trips` counts waits for the server (a statement
    outside a pipeline, a pipeline block, a COPY, BEGIN and COMMIT): both for the benchmarks."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.statements = 0
        self.round_trips = 0
        self.transactions = 0  # outermost transactions begun: which one a caller is in
        self._piped = 0

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(
        self, *, lock_timeout: float | None = None, idle_timeout: float | None = None
    ) -> Iterator[Session]:
        """BEGIN ... COMMIT; any exception rolls the whole block back.

        `lock_timeout` (seconds): a statement waiting longer for a lock raises `Busy`.
        `idle_timeout` (seconds): the server ends this transaction if it sits idle longer (a
        frozen worker), releasing its locks. Both are `SET LOCAL` (set_config(..., true)): they end
        with the transaction, so they are safe through Supabase's transaction pooler.
        """
        try:
            self.round_trips += 2  # BEGIN, COMMIT (or ROLLBACK); SAVEPOINT, RELEASE when nested
            if self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self.transactions += 1
            with self.conn.transaction():
                if lock_timeout is not None or idle_timeout is not None:
                    # A round trip of its own, never in a pipeline: PostgreSQL 16 does not arm the
                    # idle timeout after a pipeline that set it (tested: test_tick_guards).
                    self.execute(_SET_TIMEOUTS, (_ms(lock_timeout), _ms(idle_timeout)))
                yield self
        except (psycopg.OperationalError, psycopg.InternalError) as exc:
            raise unavailable(exc) from None

    @contextmanager
    def pipeline(self) -> Iterator[Session]:
        """Send the block's statements together and wait for the server once (psycopg pipeline mode).

        Read results only after the block (the `Later` functions the store returns): a fetch
        inside it would wait for the server there. An error of any statement is raised when the
        block ends (translated like `execute`'s), and the statements after it are not run.

        Inside a transaction, follow the block with a plain statement before anything slow:
        psycopg ends a pipeline with a Flush after its Sync, and PostgreSQL arms
        `idle_in_transaction_session_timeout` only at a ReadyForQuery that no message follows, so
        until the next plain statement a frozen worker would hold its locks with no idle timeout
        (measured on PostgreSQL 16 with psycopg 3.3).
        """
        self._piped += 1
        try:
            with self.conn.pipeline():
                yield self
        except (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout) as exc:
            raise unavailable(exc) from None
        finally:
            self._piped -= 1
            if not self._piped:
                self.round_trips += 1

    def execute(
        self, query: str | sql.Composed, params: Params = None, *, binary: bool = False
    ) -> psycopg.Cursor[Any]:
        """Run one statement; `binary` asks for binary results (no text parsing of many rows)."""
        self.statements += 1
        self.round_trips += 0 if self._piped else 1
        try:
            return self.conn.cursor(binary=binary).execute(query, params)
        except (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout) as exc:
            raise unavailable(exc) from None

    def fetchall(
        self, query: str | sql.Composed, params: Params = None, *, binary: bool = False
    ) -> list[tuple[Any, ...]]:
        return self.execute(query, params, binary=binary).fetchall()

    def fetchone(self, query: str | sql.Composed, params: Params = None) -> tuple[Any, ...] | None:
        return self.execute(query, params).fetchone()

    def copy_in(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """COPY rows into a table in one statement: the bulk path of the journal and backfill.
        Not inside a pipeline (psycopg refuses COPY there)."""
        self.statements += 1
        self.round_trips += 1
        stmt = sql.SQL("copy {} ({}) from stdin").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        try:
            with self.conn.cursor() as cur, cur.copy(stmt) as cp:
                for row in rows:
                    cp.write_row(row)
        except psycopg.OperationalError as exc:
            raise unavailable(exc) from None
        return len(rows)
