"""The account a strategy-minute trades on, as it sees it (`execution.py` step 1).

For Alpaca, the broker's account, positions, open orders and the day's recent orders are read
at once (four requests on threads), once per invocation and account, then carried forward in
memory from one strategy of the account to the next, with the orders they placed counted as
working. The account's row lock is still taken by each strategy's transaction, and risk is
still checked one strategy at a time; only the broker's reads are shared. Each Alpaca strategy
writes the mirror, which moves the balance row's `updated_at` (the stamp): a strategy that finds
a stamp other than the one its invocation wrote last knows another transaction (another worker,
a manual trade) placed orders on the account since, and reads the broker again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from strategy_engine.brokers.base import Broker
from strategy_engine.concurrency import gather4
from strategy_engine.core.models import Account, BrokerAccount, Order, Position, RowId
from strategy_engine.store import Session, journal
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import intents as intent_store

ADOPT_WINDOW = timedelta(days=1)  # how far back the recent orders list reaches (and adoption looks)


@dataclass(frozen=True, slots=True)
class AccountView:
    broker: Broker
    account: Account
    positions: list[Position]
    open_orders: list[Order]
    recent: Mapping[str, Order] = field(default_factory=dict)  # the invocation's read, by client id


@dataclass
class Carried:
    """An Alpaca account as this invocation read it, plus the orders its strategies placed since."""

    view: AccountView
    stamp: datetime | None  # the balance row's stamp after this invocation's last mirror write


def open_account(
    s: Session,
    account: BrokerAccount,
    locked: acct_store.Locked,
    alpaca: Callable[[BrokerAccount], Broker],
    simulated: Callable[[Account, list[Position]], Broker],
    carried: dict[RowId, Carried],
    minute: datetime,
) -> tuple[AccountView, bool]:
    """The account as the minute sees it, its row locked (`locked`, read under the lock).

    Simulated: the tables are its truth (`simulated(balance, positions)`). Alpaca: carried from an
    earlier strategy of this invocation when no one else mirrored the account since, else read
    from the broker (four requests at once), checked against the account number on record, and
    the journal's unsettled orders refreshed. Either way the mirror is written (moving the stamp,
    which tells other invocations that this one placed orders). Returns (view, read now)."""
    if account.broker != "alpaca":
        balance = locked.balance or Account(0.0, 0.0, 0.0)
        broker = simulated(balance, locked.positions)
        return AccountView(broker, balance, locked.positions, broker.open_orders()), False
    held = carried.get(account.id)
    fresh = held is None or held.stamp is None or held.stamp != locked.stamp
    if held is None or fresh:
        held = carried[account.id] = Carried(_read(s, alpaca(account), account, minute), None)
    held.stamp = acct_store.save_mirror(s, account.id, held.view.account, held.view.positions)()
    return held.view, fresh


def _read(s: Session, broker: Broker, account: BrokerAccount, minute: datetime) -> AccountView:
    acct, positions, listed, recent = gather4(
        broker.account,
        broker.positions,
        broker.open_orders,
        lambda: broker.recent_orders(minute - ADOPT_WINDOW),
    )
    acct_store.check_alpaca_account(s, account, acct.account_number)  # before anything is written
    by_cid = {o.client_order_id: o for o in recent}
    working = [*listed, *_refresh(s, broker, account.id, listed, by_cid)]
    return AccountView(broker, acct, positions, working, by_cid)


def carry(carried: Mapping[RowId, Carried], account_id: RowId, answers: Sequence[object]) -> None:
    """The orders just placed on the account count as working for its next strategies."""
    held = carried.get(account_id)
    if held is not None:
        placed = [a for a in answers if isinstance(a, Order) and a.working_qty != 0]
        held.view.open_orders.extend(placed)


def _refresh(
    s: Session, broker: Broker, account_id: RowId, listed: Sequence[Order], recent: Mapping[str, Order]
) -> list[Order]:
    """Every journal order not final, updated: from the open list, else the recent list (both read
    at once), else looked up by client id (older than the recent list reaches).

    Returns the unlisted ones still not final (`stopped`, `pending_cancel`, `held`, ...): the
    broker may leave them out of its open list, but they may still fill, so they are working."""
    by_cid = {**recent, **{o.client_order_id: o for o in listed}}
    open_ids = {o.client_order_id for o in listed}
    updated: list[tuple[Order, str | None]] = []
    unlisted: list[Order] = []
    for cid in intent_store.unsettled(s, account_id):
        order = by_cid.get(cid) or broker.get_by_client_id(cid)
        if order is None:
            logging.getLogger(__name__).warning("order %s is not at the broker: left as it is", cid)
            continue
        if cid not in open_ids and order.working_qty != 0:
            unlisted.append(order)
        updated.append((order, None))
    journal.record_orders(s, None, account_id, "strategy", None, updated)
    return unlisted
