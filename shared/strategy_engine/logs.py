"""Structured logging: one JSON object per line, with the keys Cloud Logging and CloudWatch read.

`event()` is the only way the engine logs a fact. Every line carries `severity` (Cloud Logging's
key; its values DEBUG, INFO, WARNING, ERROR, CRITICAL are Python's level names), `time`
(RFC 3339, UTC) and `message`; CloudWatch Logs Insights discovers the fields of a JSON line by
itself. Fields bound with `bind()` (an entry point's request id) go into every line logged inside
the block, the engine's run and order lines included.

Secrets: callers pass names, ids, minutes and counts, never settings. As a second line of
defence, the values registered with `redact()` (the entry points register every secret setting)
are masked in the finished line, in their raw and JSON-escaped spellings, whatever field carried
them (an exception message, a stack trace).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

LOGGER = logging.getLogger("strategy_engine")
MASK = "***"
MIN_REDACTED = 4  # shorter values are no secret worth the name, and masking them mangles every line

_context: ContextVar[Mapping[str, Any] | None] = ContextVar("strategy_engine_log_context", default=None)
_redacted: tuple[str, ...] = ()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "severity": record.levelname,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "message": record.getMessage(),
            "logger": record.name,
        }
        doc.update(_context.get() or {})
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            # `stack_trace` is where Cloud Error Reporting looks in a JSON payload.
            doc["stack_trace"] = "".join(traceback.format_exception(record.exc_info[1]))
        return _mask(json.dumps(doc, default=str, separators=(",", ":")))


def _mask(line: str) -> str:
    for secret in _redacted:
        line = line.replace(secret, MASK)
    return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the `sys.stderr` of the moment (a test's capture, a runtime's replacement)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Install the JSON formatter once (idempotent: warm invocations call it again), and set the
    level on every call: whoever changed it since (a library, a test) must not silence the
    lines operators read."""
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    if any(getattr(h, "_strategy_engine", False) for h in LOGGER.handlers):
        return
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter())
    handler._strategy_engine = True  # type: ignore[attr-defined]
    LOGGER.addHandler(handler)


def redact(secrets: Iterable[str]) -> None:
    """Mask these values (of MIN_REDACTED characters or more) in every line from now on; the set
    replaces the previous one."""
    spellings: set[str] = set()
    for value in secrets:
        if len(value) >= MIN_REDACTED:
            spellings.add(value)
            spellings.add(json.dumps(value)[1:-1])
    global _redacted  # noqa: PLW0603 - one process-wide set, swapped atomically
    _redacted = tuple(sorted(spellings, key=len, reverse=True))


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add these fields to every line logged inside the block (in this thread or task)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def event(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, message, extra={"fields": fields})


def exception(message: str, **fields: Any) -> None:
    """An ERROR line with the current exception's stack trace (call it inside `except`)."""
    LOGGER.error(message, exc_info=True, extra={"fields": fields})
