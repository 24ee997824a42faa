"""Working orders as exposure (pure): what the account has asked for but not yet received.

An order accepted by the broker and not final will change the position when it fills, so the
engine counts its unfilled remainder as if it had: in the position the strategy sees, in
`max_position_size` and `max_open_positions`, and (for buys) in buying power. The filled part
is already in the broker's positions and cash, so only the remainder is added; counting the
whole order would count a partial fill twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from strategy_engine.core.models import Order


@dataclass(frozen=True, slots=True)
class Working:
    """The account's working orders, summed per symbol.

    `qty`: signed remaining shares per symbol (buy +, sell -), only symbols with a remainder.
    `reserved`: dollars a buy remainder will spend, at the given prices (or the order's own fill
    price, else 0 when no price is known: a symbol with no price cannot be bought by us either).
    """

    qty: Mapping[str, float]
    symbols: frozenset[str]  # every symbol with a working order, even if a buy and a sell net to 0
    reserved: float


NONE = Working(MappingProxyType({}), frozenset(), 0.0)


def working(orders: Iterable[Order], prices: Mapping[str, float]) -> Working:
    """Sum the unfilled remainders of `orders` (any order final or fully filled adds nothing)."""
    qty: dict[str, float] = {}
    reserved = 0.0
    for o in orders:
        rest = o.working_qty
        if rest == 0:
            continue
        qty[o.symbol] = qty.get(o.symbol, 0.0) + rest
        if rest > 0:
            reserved += rest * prices.get(o.symbol, o.filled_avg_price or 0.0)
    nonzero = {k: v for k, v in qty.items() if v != 0}
    return Working(MappingProxyType(nonzero), frozenset(qty), reserved)
