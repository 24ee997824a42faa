"""Structured logging: one JSON object per line, with the keys Cloud Logging and CloudWatch read.

`event()` is the only way the engine logs a fact; fields are plain values, never settings or
secrets (the callers pass names, ids, minutes and counts only).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER = logging.getLogger("strategy_engine")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARNING" else "WARNING",
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "message": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure(level: int = logging.INFO, stream: Any = None) -> None:
    """Install the JSON formatter once (idempotent: warm invocations call it again)."""
    if any(getattr(h, "_strategy_engine", False) for h in LOGGER.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._strategy_engine = True  # type: ignore[attr-defined]
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def event(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, message, extra={"fields": fields})
