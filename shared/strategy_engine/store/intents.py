"""Write-ahead order intents: the row that exists before the order does.

Before an order goes to a real broker its `paper_trades` row is committed with status
`intent`, on a connection of its own (`IntentLog`), while the minute's transaction stays open
and holds its locks. Whatever happens next (a crash, a kill, a store error that rolls the minute
back), the row survives, and the next run that reconciles the account looks the order up at the
broker by its client id. The minute's transaction overwrites the row with the broker's answer
when it commits, so a row still `intent` means "sent, or about to be, by a minute that never
completed". `void` means reconciliation found no such order at the broker (or the sender
refused it past the deadline before any attempt). An `intent` row with an `error` is one whose
sender gave up (its send raised): no attempt of it will start any more. `unknown_at_broker` is
an order the broker no longer knows, long after its last answer: no longer asked about.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from strategy_engine.concurrency import submit
from strategy_engine.core.models import FINAL_ORDER_STATUSES, Order, OrderIntent, RowId, Side
from strategy_engine.store.session import DURABLE, Later, Session, sibling, sibling_opener
from strategy_engine.store.values import exact

INTENT, VOID, UNKNOWN = "intent", "void", "unknown_at_broker"
# A row in any other status is the broker's word for an order that may still change.
SETTLED = (*sorted(FINAL_ORDER_STATUSES), INTENT, VOID, UNKNOWN)
# The side connection waits this long for a row lock before giving up: a lock held by the
# minute's own transaction would otherwise wait forever (one process, two connections).
_LOCK_TIMEOUT = "2s"
# Each intent transaction's first statement: that lock timeout, and a COMMIT on disk before the
# order may go (`session.DURABLE`): the write-ahead intent must outlive a crash of the database.
_DURABLE_LOCKED = f"select set_config('lock_timeout', '{_LOCK_TIMEOUT}', true), {DURABLE}"


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
    """Commits intents on a second connection, opened on first use (or ahead, `open_ahead`);
    `close()` when done.

    Thread-safe: one log serves every account of an invocation (`fanout`), each operation
    (its transaction whole) taken in turn, so the side connection never carries two at once.
    A new connection cost the server about 4 ms of CPU and the client 1 to 2 ms (issue 17);
    the operations are one short round trip each, so they seldom wait for one another."""

    def __init__(self, main: Session) -> None:
        self._main = main
        self._side: Session | None = None
        self._opening: Future[Session] | None = None
        self._lock = threading.Lock()

    def open_ahead(self) -> None:
        """Start opening the connection on the I/O pool (`concurrency.submit`), so the first
        intent does not wait for a connection to be set up; its error (DatabaseUnavailable) is
        raised by that write."""
        with self._lock:
            if self._side is None and self._opening is None:
                self._opening = submit(sibling_opener(self._main))

    @contextmanager
    def _held(self) -> Iterator[Session]:
        """The side session, the log's lock held: one operation at a time on it."""
        with self._lock:
            yield self._session()

    def _session(self) -> Session:
        if self._side is not None and not self._side.idle:
            # Lost (an outage, a killed backend: its error went to the account that met it), or
            # left inside a transaction by an operation cut short: a write there would be a
            # savepoint that never commits. Closed (rolling back what it held); a new one serves.
            with contextlib.suppress(Exception):
                self._side.close()
            self._side = None
        if self._side is None:
            opening, self._opening = self._opening, None
            self._side = opening.result() if opening is not None else sibling(self._main)
        return self._side

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._opening is not None:
            with contextlib.suppress(Exception):  # never used: its failure is nobody's concern
                self._side = self._opening.result()
            self._opening = None
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
        with self._held() as s, s.pipeline(), s.transaction():  # BEGIN, SET, INSERT, COMMIT:
            s.execute(_DURABLE_LOCKED)  # one round trip
            cur = s.execute(
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
        return {r[0] for r in cur.fetchall()}

    def void(self, client_order_ids: Sequence[str], why: str) -> None:
        """Mark intents the broker does not know: committed at once, so a re-send may take them over."""
        if not client_order_ids:
            return
        with self._held() as s, s.transaction():
            s.execute(_DURABLE_LOCKED)
            s.execute(
                "update public.paper_trades set status = 'void', error = %s, updated_at = now()"
                " where client_order_id = any(%s) and status = 'intent'",
                (why, list(client_order_ids)),
            )

    def gave_up(self, client_order_id: str, why: str) -> None:
        """Mark an intent whose send raised: its worker will not attempt it again, so a
        reconciliation that finds nothing at the broker may void it at once. Never raises: the
        send's own error matters more (an unmarked intent is voided once it is old enough)."""
        try:
            with self._held() as s, s.transaction():
                s.execute(_DURABLE_LOCKED)
                s.execute(
                    "update public.paper_trades set error = %s, updated_at = now()"
                    " where client_order_id = %s and status = 'intent'",
                    (why[:500], client_order_id),
                )
        except Exception:  # best effort, see the docstring
            logging.getLogger(__name__).warning("could not mark intent %s given up", client_order_id)


def in_flight(s: Session, account_id: RowId, seconds: float) -> list[Order]:
    """This account's intents committed less than `seconds` ago whose sender has not given up,
    as working orders (status `intent`, nothing filled): a live worker may still POST them."""
    if seconds <= 0:
        return []
    rows = s.fetchall(
        "select client_order_id, symbol, side, qty::float8 from public.paper_trades"
        " where account_id = %s and status = 'intent' and error is null"
        " and updated_at > clock_timestamp() - make_interval(secs => %s)"
        " order by decision_minute, client_order_id",
        (account_id, seconds),
    )
    return [Order(r[0], "", r[1], Side(r[2]), r[3], INTENT, 0.0, None) for r in rows]


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


def unsettled(s: Session, account_id: RowId, stale_after: timedelta) -> list[tuple[str, bool]]:
    """(client id, stale) of this account's orders the broker may still change (not final),
    oldest first; stale: its row was last written more than `stale_after` ago."""
    rows = s.fetchall(
        "select client_order_id, updated_at < clock_timestamp() - %s from public.paper_trades"
        " where account_id = %s and client_order_id is not null and status is not null"
        " and not (status::text = any(%s)) order by decision_minute nulls first, client_order_id",
        (stale_after, account_id, list(SETTLED)),
    )
    return [(r[0], bool(r[1])) for r in rows]


def mark_unknown(s: Session, client_order_ids: Sequence[str]) -> None:
    """Stop asking about orders the broker no longer knows (status `unknown_at_broker`)."""
    if client_order_ids:
        s.execute(
            "update public.paper_trades set status = %s, updated_at = now(),"
            " error = 'the broker no longer knows this order' where client_order_id = any(%s)",
            (UNKNOWN, list(client_order_ids)),
        )


def statuses(s: Session, client_order_ids: Sequence[str]) -> dict[str, str | None]:
    """The journal status of each of these client ids that has a row."""
    if not client_order_ids:
        return {}
    rows = s.fetchall(
        "select client_order_id, status from public.paper_trades where client_order_id = any(%s)",
        (list(client_order_ids),),
    )
    return {r[0]: r[1] for r in rows}
