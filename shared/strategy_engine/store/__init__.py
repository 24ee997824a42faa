"""The Postgres adapter (psycopg 3). All SQL of the engine lives in this package."""

from strategy_engine.store.session import Session, connect, redact_url

__all__ = ["Session", "connect", "redact_url"]
