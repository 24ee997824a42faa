"""What every strategy config tells the engine: which symbols and how much history to load."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from pydantic import BaseModel, ConfigDict, Field, field_validator

SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,14}$"


def check_symbol(symbol: object) -> str:
    """The one spelling rule for tickers, for configs and manual orders alike."""
    if not isinstance(symbol, str) or not re.match(SYMBOL_PATTERN, symbol):
        raise ValueError(f"invalid symbol {symbol!r} (upper-case ticker expected)")
    return symbol


def check_text(value: str) -> str:
    """Names and paths from outside: no NUL or other control character (Postgres text refuses NUL,
    a log line or a file name should not carry the rest). Raises ValueError."""
    bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ValueError(f"control character U+{ord(bad):04X} not allowed")
    return value


class StrategyConfig(BaseModel):
    """Frozen, strict, closed: unknown keys and wrong types are refused, never coerced."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    symbols: tuple[str, ...] = Field(default=("SPY", "IWM", "QQQ"), min_length=1, max_length=2000)
    max_bar_age_seconds: float = Field(default=120, gt=0)

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols_list(cls, v: object) -> object:
        # JSON has lists, not tuples; accept a list and check each symbol's spelling.
        if isinstance(v, list):
            v = tuple(v)
        if isinstance(v, tuple):
            for s in v:
                check_symbol(s)
            if len(set(v)) != len(v):
                raise ValueError("duplicate symbols")
        return v

    @property
    def bars_needed(self) -> int:
        """How many recent bars per symbol the strategy reads at T."""
        return 1

    @property
    def flow_minutes(self) -> int:
        """How many minutes of options flow before T the strategy reads."""
        return 0

    def fingerprint(self) -> str:
        """A short hash of the full config, stored with runs to tie results to parameters."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
