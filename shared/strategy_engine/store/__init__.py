"""The Postgres adapter (psycopg 3). All SQL of the engine lives in this package."""

from strategy_engine.store.redaction import redact_url
from strategy_engine.store.session import Session, connect

__all__ = ["Session", "connect", "redact_url"]
