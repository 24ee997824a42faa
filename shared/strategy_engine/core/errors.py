"""The engine's own error hierarchy.

Vendor errors (psycopg, alpaca-py, requests) are translated into these once, at the boundary
where they happen; entry points map them to outcomes: `InputError` -> 4xx / exit 2,
`Unavailable` -> 503 with Retry-After / exit 3, anything else -> 500 with a run id.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose.

    `detail`: what an operator may need and a caller must not see (a driver's own text, already
    scrubbed of secrets), for logs only; None when there is none.
    """

    detail: str | None = None

    @property
    def public(self) -> str:
        """What a remote caller may read (an HTTP body)."""
        return str(self)


class InputError(EngineError):
    """The caller's input is wrong; nothing was written."""

    status = 400


class NotFound(InputError):
    status = 404


class MigrationRefused(InputError):
    """A migration met data or a schema it cannot use safely; that migration changed nothing."""


class Unavailable(EngineError):
    """A dependency (database, broker) is unreachable or failing; retry later."""

    status = 503


class DatabaseUnavailable(Unavailable):
    @property
    def public(self) -> str:
        # The database's place is the operator's business: a remote caller learns the kind only.
        return "database unavailable"


class BrokerUnavailable(Unavailable):
    pass


class AccountConflict(BrokerUnavailable):
    """A broker account's credentials reach an Alpaca account that another row already uses, or
    not the one recorded for it: refused before any order, until the configuration is fixed."""


class Busy(EngineError):
    """A lock the work needs is held by another worker past `lock_timeout`: answer `busy`, write nothing."""


class DuplicateOrder(EngineError):
    """The broker already holds an order with this client_order_id: adopt it."""

    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"duplicate client_order_id {client_order_id}")
        self.client_order_id = client_order_id


class OrderRejected(EngineError):
    """The broker refused this order (4xx other than duplicate); the tick goes on. `code` None:
    refused on our side before anything was sent (an order Alpaca could not take, a client id
    already taken)."""

    def __init__(self, code: str | int | None, message: str) -> None:
        self.code = code
        self.message = message
        said = "order refused before sending"
        if self.reached_broker:
            said = f"broker rejected the order ({code})"
        super().__init__(f"{said}: {message}")

    @property
    def reached_broker(self) -> bool:
        """False when the refusal is ours, before anything was sent (no status)."""
        return self.code is not None


class NotSent(EngineError):
    """An order was not sent because the deadline passed first: nothing reached the broker.

    The decision is logged `blocked` with the reason `code` (e.g. `deadline`); the tick goes on.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LiveTradingRefused(InputError):
    """Raised before any request when settings point at a live (non-paper) endpoint."""

    status = 403
