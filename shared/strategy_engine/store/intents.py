"""Write-ahead order intents: the row that exists before the order does.

Before an order goes to a real broker its `paper_trades` row is committed with status
`intent`, on a connection of its own (`IntentLog`), while the minute's transaction stays open
and holds its locks. Whatever happens next (a crash, a kill, a store error that rolls the minute
back), the row survives, and the next run that reconciles the account looks the order up at the
broker by its client id. The minute's transaction overwrites the row with the broker's answer
when it commits, so a row still `intent` means "sent, or about to be, by a minute that never
completed". `void` means reconciliation found no such order at the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from strategy_engine.core.models import FINAL_ORDER_STATUSES, OrderIntent, RowId, Side
from strategy_engine.store.session import Later, Session, exact, sibling

INTENT, VOID = "intent", "void"
# A row in any other status is the broker's word for an order that may still change.
SETTLED = (*sorted(FINAL_ORDER_STATUSES), INTENT, VOID)
# The side connection waits this long for a row lock before giving up: a lock held by the
# minute's own transaction would otherwise wait forever (one process, two connections).
_LOCK_TIMEOUT = "2s"


@dataclass(frozen=True, slots=True)
class Pending:
    """An intent whose minute never recorded the broker's answer."""

    client_order_id: str
    strategy_id: RowId | None
    minute: datetime
    symbol: str
    side: Side
    qty: float
    price: float | None  # the decision price (notional of the day counters), None if unknown


class IntentLog:
    """Commits intents on a second connection, opened on first use; `close()` when done."""

    def __init__(self, main: Session) -> None:
        self._main = main
        self._side: Session | None = None

    def _session(self) -> Session:
        if self._side is None:
            self._side = sibling(self._main)
        return self._side

    def close(self) -> None:
        if self._side is not None:
            self._side.close()
            self._side = None

    def write(
        self,
        strategy_id: RowId | None,
        account_id: RowId,
        source: str,
        minute: datetime,
        intents: Sequence[OrderIntent],
    ) -> set[str]:
        """Commit the intents in one statement; the client ids written. An id left out already
        names a live order (send nothing for it).

        A `void` row (reconciliation found nothing at the broker) is taken over: the order was
        never placed, so the same client id may be sent again. Raises DatabaseUnavailable.
        """
        if not intents:
            return set()
        s = self._session()
        with s.transaction():
            s.execute(f"set local lock_timeout = '{_LOCK_TIMEOUT}'")
            rows = s.fetchall(
                """
                insert into public.paper_trades (strategy_id, account_id, source, decision_minute,
                  client_order_id, symbol, side, qty, decision_price, status, updated_at)
                select %(strategy)s, %(account)s, %(source)s, %(minute)s, u.cid, u.sym, u.side, u.qty,
                  u.price, 'intent', now()
                from unnest(%(cid)s::text[], %(sym)s::text[], %(side)s::text[], %(qty)s::numeric[],
                            %(price)s::numeric[]) as u(cid, sym, side, qty, price)
                on conflict (client_order_id) do update set status = 'intent', error = null,
                  strategy_id = excluded.strategy_id, account_id = excluded.account_id,
                  decision_minute = excluded.decision_minute, symbol = excluded.symbol,
                  side = excluded.side, qty = excluded.qty, decision_price = excluded.decision_price,
                  updated_at = now()
                where paper_trades.status = 'void'
                returning client_order_id
                """,
                {
                    "strategy": strategy_id,
                    "account": account_id,
                    "source": source,
                    "minute": minute,
                    "cid": [i.client_order_id for i in intents],
                    "sym": [i.symbol for i in intents],
                    "side": [i.side.value for i in intents],
                    "qty": [exact(i.qty) for i in intents],
                    "price": [exact(i.price) for i in intents],
                },
            )
        return {r[0] for r in rows}

    def void(self, client_order_ids: Sequence[str], why: str) -> None:
        """Mark intents the broker does not know: committed at once, so a re-send may take them over."""
        if not client_order_ids:
            return
        s = self._session()
        with s.transaction():
            s.execute(f"set local lock_timeout = '{_LOCK_TIMEOUT}'")
            s.execute(
                "update public.paper_trades set status = 'void', error = %s, updated_at = now()"
                " where client_order_id = any(%s) and status = 'intent'",
                (why, list(client_order_ids)),
            )


def pending_later(s: Session, account_id: RowId, strategy_id: RowId | None) -> Later[list[Pending]]:
    """Intents of this account left by minutes that never completed: the strategy's own and the
    manual ones (no strategy), oldest first. Other strategies' intents wait for their own runs,
    which lock their own day rows (reconciling them here could deadlock on those rows). Sent now
    (in the caller's pipeline, if any), read when called."""
    cur = s.execute(
        """
        select client_order_id, strategy_id, decision_minute, symbol, side, qty::float8,
               decision_price::float8
        from public.paper_trades
        where account_id = %s and status = 'intent' and (strategy_id = %s or strategy_id is null)
        order by decision_minute, client_order_id
        """,
        (account_id, strategy_id),
    )
    return lambda: [Pending(r[0], r[1], r[2], r[3], Side(r[4]), r[5], r[6]) for r in cur.fetchall()]


def unsettled(s: Session, account_id: RowId) -> list[str]:
    """Client ids of this account's orders the broker may still change (not final), oldest first."""
    rows = s.fetchall(
        "select client_order_id from public.paper_trades where account_id = %s"
        " and client_order_id is not null and status is not null and not (status = any(%s))"
        " order by decision_minute nulls first, client_order_id",
        (account_id, list(SETTLED)),
    )
    return [r[0] for r in rows]


def known(s: Session, client_order_ids: Sequence[str]) -> set[str]:
    """Which of these client ids already have a row (of any status)."""
    if not client_order_ids:
        return set()
    rows = s.fetchall(
        "select client_order_id from public.paper_trades where client_order_id = any(%s)",
        (list(client_order_ids),),
    )
    return {r[0] for r in rows}
