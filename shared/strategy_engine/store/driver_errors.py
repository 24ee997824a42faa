"""The driver's errors as ours: bad input (InputError) or an outage (DatabaseUnavailable, or
Busy for a lock waited for in vain), worded so that no message quotes the driver, whose text
may carry pieces of the password; the driver's first line goes, scrubbed, in `detail`, for logs.
"""

from __future__ import annotations

import re

import psycopg

from strategy_engine.core.errors import Busy, DatabaseUnavailable, InputError
from strategy_engine.store.redaction import location, scrub

INVALID_URL = "the database URL is not a valid postgresql:// URL"
# A statement psycopg prepared is not on the server connection (or its name is taken there): a
# transaction pooler handed the transaction to another server connection, as DB_PREPARED_STATEMENTS
# behind one would. Another client's statement under our name may run instead: only the setting is safe.
PREPARED_LOST = (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)
PREPARED_LOST_MESSAGE = (
    "database unavailable: a prepared statement is missing on the server (a transaction pooler?):"
    " set DB_PREPARED_STATEMENTS=false, or reach the server directly"
)
# What a statement may raise that is an outage, not a bug or bad input.
OUTAGES = (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout, *PREPARED_LOST)
# libpq's words for a URL option it refuses before any network I/O (an outage it is not), with
# the option each names: libpq's own keyword (group "o"), never the value, which may be a secret.
_REFUSALS = tuple(
    (re.compile(pattern), option)
    for pattern, option in (
        (r'invalid "?(?P<o>\w+)"? value: ', ""),  # a value out of its set: sslmode=bogus
        (r'invalid integer value ".*" for connection option "(?P<o>\w+)"$', ""),
        (r"invalid port number: ", "port"),
        (r"could not parse network address ", "hostaddr"),
        (r"weak sslmode ", "sslmode"),  # sslrootcert=system wants sslmode=verify-full
        (r"invalid SSL protocol version range$", "ssl_min_protocol_version"),
        (r"negative require_auth method ", "require_auth"),
        (r'definition of service ".*" not found$', "service"),
    )
)


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message ("" when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def refused(message: str) -> str | None:
    """What `InputError` says of libpq's refusal of an option (`message`: the first line of its
    error); None when `message` is no such refusal."""
    text = message.removeprefix("connection is bad: ")
    for pattern, option in _REFUSALS:
        found = pattern.match(text)
        if found is not None:
            named = found.groupdict().get("o") or option
            return f"{INVALID_URL}: " + (
                "service is not defined" if named == "service" else f"{named} has an invalid value"
            )
    return None


def unavailable(exc: Exception, where: str = "", url: str = "") -> DatabaseUnavailable | Busy:
    """Our error for a driver's outage (Busy for a lock timeout: another worker holds the lock;
    a prepared statement lost: the message names the setting to change). Its message names the
    place only; the driver's own text (libpq echoes pieces of a malformed URL) goes, scrubbed,
    in `detail`, for logs alone."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return Busy("busy: another worker holds the lock")
    if isinstance(exc, PREPARED_LOST):
        err = DatabaseUnavailable(PREPARED_LOST_MESSAGE)
    else:
        err = DatabaseUnavailable(f"database unavailable: {where}" if where else "database unavailable")
    err.detail = scrub(first_line(exc) or type(exc).__name__, url)
    return err


def connect_error(exc: psycopg.Error, url: str) -> InputError | DatabaseUnavailable | Busy:
    """Our error for a failed connect to `url` (what errors may name, by its location, and must
    scrub, its password): an option libpq refused, or a URL it could not parse, is bad input;
    anything else an outage."""
    first = first_line(exc)
    said = refused(first) if isinstance(exc, psycopg.OperationalError) else INVALID_URL
    if said is None:
        return unavailable(exc, location(url), url)
    err = InputError(said)
    err.detail = scrub(first, url)
    return err
