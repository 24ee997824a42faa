"""What every strategy config tells the engine: which symbols and how much history to load."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from decimal import Decimal

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


QTY_DECIMALS = 9  # Alpaca takes qty with up to 9 decimal places (reference/alpaca.md, fractional)


def qty_problem(qty: float, *, short: bool = False) -> str | None:
    """Why Alpaca would refuse this share quantity, or None: the one quantity rule, for configs,
    manual orders and the simulated broker alike. `short`: the shares would be sold short, which
    Alpaca allows in whole shares only (no fractional shorting)."""
    if not (math.isfinite(qty) and qty > 0):
        return f"invalid qty {qty!r} (must be a finite number > 0)"
    exponent = Decimal(repr(float(qty))).as_tuple().exponent
    if isinstance(exponent, int) and exponent < -QTY_DECIMALS:
        return f"qty {qty!r} has more than {QTY_DECIMALS} decimal places"
    if short and qty != math.floor(qty):
        return f"qty {qty!r} is fractional: fractional shares cannot be sold short"
    return None


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
