"""How Python values are written to and read from the columns: money and quantities as exact
decimals, row keys as the driver reads them."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from strategy_engine.core.models import RowId


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
