"""The one seam between the engine and any broker.

Adapters translate their vendor's errors once, here at the boundary, into ours:
`BrokerUnavailable` (retry the minute), `DuplicateOrder` (adopt by client id),
`OrderRejected` (log it, go on with the other symbols).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from strategy_engine.core.models import Account, Order, OrderIntent, Position


class Broker(Protocol):
    #: True when the broker holds the truth (Alpaca): the engine mirrors it into the tables.
    #: False for the simulated broker, whose truth *is* the tables.
    authoritative: bool

    def account(self) -> Account: ...

    def positions(self) -> list[Position]: ...

    def submit(self, intent: OrderIntent) -> Order:
        """Place the order; a duplicate client_order_id returns the existing order."""
        ...

    def get_by_client_id(self, client_order_id: str) -> Order | None: ...

    def open_orders(self) -> list[Order]:
        """Every order the broker still works on (not final), in one call."""
        ...

    def recent_orders(self, after: datetime) -> list[Order]:
        """Orders of any status submitted after `after` (for adopting orders with no row)."""
        ...

    def clock(self) -> tuple[datetime, bool]:
        """(broker time, market open)."""
        ...
