"""What a request needs from outside (settings, a database session, the engine's dependencies, a
clock), built once per process from settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import SecretStr

from strategy_engine import engine, logs
from strategy_engine.core.errors import InputError
from strategy_engine.http.messages import Misconfigured
from strategy_engine.runtime import connect_to
from strategy_engine.settings import Settings, get_settings
from strategy_engine.store import Session
from strategy_engine.store.redaction import url_secrets


@dataclass(frozen=True)
class Services:
    """What a request needs from outside, built from settings; tests swap deps and clock."""

    settings: Settings
    open_session: Callable[[], Session]
    deps: Callable[[], engine.Deps] = engine.Deps
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @classmethod
    def from_settings(cls, database_url: str | None = None) -> Services:
        """`database_url`, else DATABASE_URL. Never the embedded server: a function must not trade
        on a database of its own that starts empty on every cold start."""
        settings = get_settings()
        url = database_url or (settings.database_url.get_secret_value() if settings.database_url else None)
        logs.redact([*secret_values(settings), *(url_secrets(database_url) if database_url else [])])

        def open_session() -> Session:
            if not url:
                raise Misconfigured("DATABASE_URL is not set")
            try:
                return connect_to(url)
            except InputError as exc:  # the server's URL, not the caller's input: detail to the log only
                err = Misconfigured("DATABASE_URL is not a valid postgresql:// URL")
                err.detail = exc.detail
                raise err from None

        return cls(settings, open_session)


def secret_values(settings: Settings) -> list[str]:
    """Every SecretStr setting's value, and every fragment of the database URL's password."""
    out = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            out.append(value.get_secret_value())
    if settings.database_url is not None:
        out.extend(url_secrets(settings.database_url.get_secret_value()))
    return out
