"""Building a session from settings: the one place every entry point gets its database from.

Precedence: an explicit URL (a `--database-url` flag), else `DATABASE_URL`, else the embedded
Postgres. The embedded database is migrated on first use so that zero setup means zero setup.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect, embedded
from strategy_engine.store.migrations import migrate


def resolve_database_url(explicit: str | None = None) -> tuple[str, bool]:
    """(url, is_embedded)."""
    if explicit:
        if embedded.is_embedded_url(explicit):
            embedded.start()  # the server stops with its last client: start it again for this URL
        return explicit, False
    settings = get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    return embedded.start(), True


TRANSACTION_POOLER_PORT = 6543  # Supabase's (Supavisor's) transaction mode


def prepared(url: str) -> bool:
    """Whether statements on `url` may be prepared (`store.connect`): on the embedded server,
    which no pooler stands in front of, or when DB_PREPARED_STATEMENTS says the server is
    reached directly. Never on port 6543, whatever the setting: Supabase's transaction pooler
    hands each transaction to any server connection, where our statement is missing (the
    minute fails) or another client's stands under its name (and would run instead)."""
    if embedded.is_embedded_url(url):
        return True
    return get_settings().db_prepared_statements and _port(url) != TRANSACTION_POOLER_PORT


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:  # not a URL connect() accepts: it says so
        return None


def connect_to(url: str, *, embedded_server: bool = False) -> Session:
    """`store.connect(url)`, preparing statements where `prepared(url)` (or `embedded_server`:
    the caller started it) allows: how every entry point opens its database session."""
    return connect(url, prepare=embedded_server or prepared(url))


def open_session(explicit: str | None = None) -> Session:
    url, is_embedded = resolve_database_url(explicit)
    session = connect_to(url, embedded_server=is_embedded)
    if is_embedded:
        migrate(session)
    return session
