"""The account a strategy-minute trades on, as it sees it (`execution.py` step 1).

For Alpaca, the broker's account, positions, open orders and recent orders are read at once
(four requests on threads), once per invocation and account, then carried forward in memory
from one strategy of the account to the next, with the orders they are sending counted as
working. The account's row lock is held while any of its strategies is decided, and risk is
checked one strategy at a time; only the broker's reads are shared. The mirror is written once
per transaction, which moves the balance row's `updated_at` (the stamp) when it commits: a
strategy that finds a stamp other than the one its invocation wrote last knows another
transaction (another worker, a manual trade) may have placed orders on the account since, and
reads the broker again.

The first read of each account is sent when the invocation starts (`Prefetch`), at the same
time as the broker's clock, before any lock is taken: the stamp is read first, and the reads
are used only if, under the lock, the stamp is still that one and the account has no intents.
Every order is preceded by its committed intent, and a minute that placed orders either commits
its mirror (moving the stamp) or leaves its intents behind until a later run settles them (and
commits), so no order can have been placed between the reads and the lock unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from strategy_engine.brokers.base import Broker
from strategy_engine.concurrency import gather2, gather4
from strategy_engine.core.errors import InputError
from strategy_engine.core.models import Account, BrokerAccount, Order, OrderIntent, Position, RowId
from strategy_engine.invocation import Invocation
from strategy_engine.logs import event
from strategy_engine.store import Session, journal
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import intents as intent_store

# How far back the recent orders list reaches, and so how far reconciliation looks for orders
# with no row: 4 days spans a long weekend's gap between the last run of one session and the
# first of the next.
ADOPT_WINDOW = timedelta(days=4)
# A journal order the broker no longer knows is looked up each run for this long after its last
# answer, then marked `unknown_at_broker` (with a warning) and no longer asked about.
UNKNOWN_AFTER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AccountView:
    broker: Broker
    account: Account
    positions: list[Position]
    open_orders: list[Order]
    recent: Mapping[str, Order] = field(default_factory=dict)  # the invocation's read, by client id
    # Working orders the account's buying power does not hold back: intents the broker does not
    # hold yet, and orders placed since the account was read (carried forward).
    unheld: list[Order] = field(default_factory=list)
    prices: dict[str, float] = field(default_factory=dict)  # decision prices of carried orders


@dataclass
class Carried:
    """An Alpaca account as this invocation read it, plus the orders its strategies placed since."""

    view: AccountView
    stamp: datetime | None  # the balance row's stamp after this invocation's last mirror write
    written_in: int = 0  # the session's transaction (`Session.transactions`) that wrote it


@dataclass(frozen=True, slots=True)
class Reads:
    """What the broker said of an account: four requests sent at once."""

    account: Account
    positions: list[Position]
    open_orders: list[Order]
    recent: list[Order]  # every order since `ADOPT_WINDOW` before the minute

    @classmethod
    def of(cls, broker: Broker, minute: datetime, *, lists_first: bool = False) -> Reads:
        """The four reads at once (raises the first error, in that order, once all have ended).

        `lists_first` (an account with intents, whose POSTs may land while it is read): the two
        order lists, then the account and positions, one round trip more. An order then either
        is in the lists, and whatever it filled by then is in the account and positions read
        after them, or it is not, and counts at its whole quantity (`_view`): never neither."""

        def recent() -> list[Order]:
            return broker.recent_orders(minute - ADOPT_WINDOW)

        if lists_first:
            listed, since = gather2(broker.open_orders, recent)
            return cls(*gather2(broker.account, broker.positions), listed, since)
        return cls(*gather4(broker.account, broker.positions, broker.open_orders, recent))


class Prefetch:
    """The first broker reads of the invocation's Alpaca accounts, sent as it starts.

    `start` reads the accounts' stamps (one statement), then sends each account's reads on
    `pool`; `take` hands them to the account's first strategy only when the stamp under its lock
    is still the one read before them (else None: read again)."""

    def __init__(self) -> None:
        self._ahead: dict[RowId, tuple[datetime | None, Future[Reads]]] = {}

    @classmethod
    def start(
        cls,
        s: Session,
        accounts: Sequence[BrokerAccount],
        alpaca: Callable[[BrokerAccount], Broker],
        inv: Invocation,
        pool: ThreadPoolExecutor,
    ) -> Prefetch:
        """Send, before anything else, the requests the minute will need of the real broker: its
        clock (`Invocation.ask_clock`) and each account's reads; none when the minute is too late
        to send anything."""
        out, minute = cls(), inv.minute
        if not accounts or inv.late_by() is not None:
            return out
        inv.ask_clock(accounts[0], alpaca, pool)
        unique = list({a.id: a for a in accounts}.values())
        stamps = acct_store.stamps(s, [a.id for a in unique]) if unique else {}  # before any request
        for a in unique:
            out._ahead[a.id] = (stamps.get(a.id), pool.submit(lambda a=a: Reads.of(alpaca(a), minute)))  # type: ignore[misc]
        return out

    def take(self, account_id: RowId, stamp: datetime | None, sending: bool) -> Reads | None:
        """The account's prefetched reads if they succeeded, no one mirrored it since, and it has
        no intents (`sending`); else None. Waits for them.

        A minute that placed an order and then died rolled its mirror write back, but left its
        intents: with intents about, the broker is read again under the lock, where the order
        (filled or working) is seen, as it would have been without reading ahead."""
        ahead = self._ahead.pop(account_id, None)
        if ahead is None or sending or ahead[0] != stamp or ahead[1].exception() is not None:
            return None  # not sent, stale, or failed: the caller reads again (and meets any outage)
        return ahead[1].result()


def open_account(
    s: Session,
    account: BrokerAccount,
    locked: acct_store.Locked,
    alpaca: Callable[[BrokerAccount], Broker],
    simulated: Callable[[Account, list[Position]], Broker],
    carried: dict[RowId, Carried],
    minute: datetime,
    as_of: date,
    in_flight_seconds: float = 0.0,
    prefetch: Prefetch | None = None,
) -> tuple[AccountView, bool]:
    """The account as the minute sees it, its row locked (`locked`, read under the lock, its
    positions as of New York date `as_of`).

    Simulated: the tables are its truth (`simulated(balance, positions)`). Alpaca: carried from an
    earlier strategy of this invocation when no one else mirrored the account since, else the
    reads `prefetch` sent at the invocation's start when still valid, else read from the broker
    (four requests at once), checked against the account number on record, and
    the journal's unsettled orders refreshed; intents younger than `in_flight_seconds` the broker
    does not hold yet are working (their worker may still be sending). Either way the mirror is
    written (moving the stamp, which tells other invocations that this one may place orders).
    Returns (view, read now)."""
    if account.broker != "alpaca":
        if locked.cash_missing:  # its figures are the tables': trading from $0 would write $0 over them
            raise InputError(
                f"account {account.name}: its broker_balances row has no cash (a table from an older"
                f" shape); set it (update public.broker_balances set cash = <dollars> where account_id ="
                f" '{account.id}') before it trades"
            )
        balance = locked.balance or Account(0.0, 0.0, 0.0)
        broker = simulated(balance, locked.positions)
        return AccountView(broker, balance, locked.positions, broker.open_orders()), False
    held = carried.get(account.id)
    fresh = held is None or held.stamp is None or held.stamp != locked.stamp
    if held is None or fresh:
        broker = alpaca(account)
        ahead = prefetch.take(account.id, locked.stamp, locked.sending) if prefetch else None
        reads = ahead or Reads.of(broker, minute, lists_first=locked.sending)
        view = _view(s, broker, account, reads, in_flight_seconds)
        held = carried[account.id] = Carried(view, None)
    if fresh or held.written_in != s.transactions:  # once per transaction: its COMMIT shows it
        mirror = acct_store.save_mirror(s, account.id, held.view.account, held.view.positions, as_of)
        held.stamp, held.written_in = mirror(), s.transactions
    return held.view, fresh


def _view(
    s: Session, broker: Broker, account: BrokerAccount, reads: Reads, in_flight_seconds: float
) -> AccountView:
    acct, positions, listed = reads.account, reads.positions, reads.open_orders
    acct_store.check_alpaca_account(s, account, acct.account_number)  # before anything is written
    by_cid = {o.client_order_id: o for o in reads.recent}
    working = [*listed, *_refresh(s, broker, account.id, listed, by_cid)]
    seen = {o.client_order_id for o in working}
    unheld: list[Order] = []
    for young in intent_store.in_flight(s, account.id, in_flight_seconds):
        if young.client_order_id in seen:  # listed open: the balance read after the lists nets it
            continue
        # Not open when the lists were read (the account has intents: read after them). In the
        # recent list, it was final then, and the account and positions read after hold what
        # it filled. Not there, its POST may land any moment, after the reads too: it counts as
        # working, and as buying power the balance read may not net, at its whole quantity.
        # (Looked up after reads made at once, an order that filled in between counted for
        # nothing: a second entry. tests/test_order_safety.py, tests/test_young_intents_attacks.py)
        then = by_cid.get(young.client_order_id, young)
        working.append(then)
        unheld.append(then)
    return AccountView(broker, acct, positions, working, by_cid, unheld)


def carry(carried: Mapping[RowId, Carried], account_id: RowId, sending: Sequence[OrderIntent]) -> None:
    """The orders being sent on the account count as working for its next strategies (priced at
    their decision price), and as buying power held back (the carried balance predates them)."""
    held = carried.get(account_id)
    if held is not None:
        placed = [
            Order(i.client_order_id, "", i.symbol, i.side, i.qty, intent_store.INTENT, 0.0, None)
            for i in sending
        ]
        held.view.open_orders.extend(placed)
        held.view.unheld.extend(placed)
        held.view.prices.update({i.symbol: i.price for i in sending})


def _refresh(
    s: Session, broker: Broker, account_id: RowId, listed: Sequence[Order], recent: Mapping[str, Order]
) -> list[Order]:
    """Every journal order not final, updated: from the open list, else the recent list (both read
    at once), else looked up by client id (older than the recent list reaches). One the broker
    has not known for `UNKNOWN_AFTER` is marked `unknown_at_broker`.

    Returns the unlisted ones still not final (`stopped`, `pending_cancel`, `held`, ...): the
    broker may leave them out of its open list, but they may still fill, so they are working."""
    by_cid = {**recent, **{o.client_order_id: o for o in listed}}
    open_ids = {o.client_order_id for o in listed}
    updated: list[tuple[Order, str | None]] = []
    unlisted: list[Order] = []
    gone: list[str] = []
    for cid, stale in intent_store.unsettled(s, account_id, UNKNOWN_AFTER):
        order = by_cid.get(cid) or broker.get_by_client_id(cid)
        if order is None and stale:
            gone.append(cid)
            event("order unknown at the broker", level=logging.WARNING, client_order_id=cid)
        elif order is None:
            logging.getLogger(__name__).warning("order %s is not at the broker: left as it is", cid)
        if order is None:
            continue
        if cid not in open_ids and order.working_qty != 0:
            unlisted.append(order)
        updated.append((order, None))
    journal.record_orders(s, None, account_id, "strategy", None, updated)
    intent_store.mark_unknown(s, gone)
    return unlisted
