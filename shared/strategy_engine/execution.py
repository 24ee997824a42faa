"""The execution half of a minute: the account as the broker holds it, reconciliation, sending.

`engine.py` calls these in order inside a strategy's transaction:

1. `open_account`: lock the account, read balances, positions and the working orders (one list
   call), mirror them, and refresh every journal order that is not final yet.
2. `reconcile`: for each write-ahead intent a minute never completed, ask the broker by client id;
   record what it holds and log the decision `reconciled` (or `failed` when the broker rejected or
   canceled it unfilled; `void` when it never got there). Once per invocation and account, adopt
   recent orders under our client-id prefix that have no row at all.
3. `working_exposure` and `sender`: what the working orders hold back, and the submit function
   that commits each intent on its own connection before the order is sent.

The simulated broker's truth is the minute's own transaction, so it needs no write-ahead: a crash
rolls its fills back with everything else. It goes through the same steps, with no working orders.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from strategy_engine.brokers.base import Broker
from strategy_engine.concurrency import gather3
from strategy_engine.core import calendar, exposure
from strategy_engine.core.data_quality import held_through_break
from strategy_engine.core.decide import DEADLINE, Submit, processed_run
from strategy_engine.core.errors import NotSent, OrderRejected
from strategy_engine.core.models import (
    Account,
    Action,
    BrokerAccount,
    DayState,
    Decision,
    Features,
    Order,
    OrderIntent,
    Outcome,
    Position,
    RowId,
    Signal,
    StrategyRun,
)
from strategy_engine.logs import event
from strategy_engine.store import Session, journal, market
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import intents as intent_store
from strategy_engine.store.intents import IntentLog, Pending

CLIENT_ID_PREFIX = "se-"  # every client id the engine sends (strategy `se-…`, manual `se-m-…`)
# How far back reconciliation looks for orders with no row: 4 days spans a long weekend's gap
# between the last run of one session and the first of the next.
ADOPT_WINDOW = timedelta(days=4)
# A journal order the broker no longer knows is looked up each run for this long after its last
# answer, then marked `unknown_at_broker` (with a warning) and no longer asked about.
UNKNOWN_AFTER = timedelta(hours=1)
NOT_AT_BROKER = "not at the broker: never sent, or refused before the answer was recorded"


@dataclass(frozen=True, slots=True)
class AccountView:
    broker: Broker
    account: Account
    positions: list[Position]
    open_orders: list[Order]


def _never() -> bool:
    return False


@dataclass
class Invocation:
    """What one tick shares between its strategies: the intent connection, adopted accounts, and
    its deadline: `past_deadline()` on the invocation's clock, `send_by` on the wall clock."""

    intents: IntentLog
    adopted: set[RowId] = field(default_factory=set)
    past_deadline: Callable[[], bool] = _never
    send_by: datetime | None = None


def open_account(
    s: Session,
    account: BrokerAccount,
    alpaca: Callable[[BrokerAccount], Broker],
    simulated: Callable[[Account, list[Position]], Broker],
    as_of: date,
    in_flight_seconds: float = 0.0,
) -> AccountView:
    """Lock the account's row; for a real broker, mirror it and refresh unsettled orders.

    `simulated(balance, positions)` builds the simulated broker from the tables (its truth) with
    the splits effective by New York date `as_of`. Intents younger than `in_flight_seconds` the
    broker does not hold yet are working: their worker may still be sending (see `reconcile`)."""
    balance = acct_store.lock_account(s, account.id) or Account(0.0, 0.0, 0.0)
    if account.broker != "alpaca":
        positions = acct_store.positions(s, account.id, as_of)
        broker = simulated(balance, positions)
        return AccountView(broker, balance, positions, broker.open_orders())
    broker = alpaca(account)
    acct, positions, listed = gather3(broker.account, broker.positions, broker.open_orders)
    acct_store.check_alpaca_account(s, account, acct.account_number)  # before anything is written
    acct_store.save_mirror(s, account.id, acct, positions, as_of)
    working = [*listed, *_refresh(s, broker, account.id, listed)]
    seen = {o.client_order_id for o in working}
    for young in intent_store.in_flight(s, account.id, in_flight_seconds):
        if young.client_order_id not in seen:  # unlisted: held but final, or not there (yet)
            held = broker.get_by_client_id(young.client_order_id)
            working.append(young if held is None else held)
    return AccountView(broker, acct, positions, working)


def _refresh(s: Session, broker: Broker, account_id: RowId, listed: Sequence[Order]) -> list[Order]:
    """Every journal order not final, updated: from the open list, else looked up by client id.

    Returns the looked-up ones still not final (`stopped`, `pending_cancel`, `held`, ...): the
    broker may leave them out of its open list, but they may still fill, so they are working."""
    by_cid = {o.client_order_id: o for o in listed}
    updated: list[tuple[Order, str | None]] = []
    unlisted: list[Order] = []
    gone: list[str] = []
    for cid, stale in intent_store.unsettled(s, account_id, UNKNOWN_AFTER):
        order = by_cid.get(cid)
        if order is None:
            order = broker.get_by_client_id(cid)
            if order is None and stale:
                gone.append(cid)
                event("order unknown at the broker", level=logging.WARNING, client_order_id=cid)
            elif order is None:
                logging.getLogger(__name__).warning("order %s is not at the broker: left as it is", cid)
            if order is None:
                continue
            if order.working_qty != 0:
                unlisted.append(order)
        updated.append((order, None))
    journal.record_orders(s, None, account_id, "strategy", None, updated)
    intent_store.mark_unknown(s, gone)
    return unlisted


def reconcile(
    s: Session,
    view: AccountView,
    account_id: RowId,
    strategy_id: RowId,
    day: DayState,
    run: Invocation,
    minute: datetime,
) -> tuple[list[Decision], DayState]:
    """Settle the intents minutes left behind; returns the strategy's decisions to log and its
    day counters with the reconciled orders counted (those of the day of `day` only)."""
    if not view.broker.authoritative:
        return [], day
    decisions: list[Decision] = []
    found: list[tuple[Order, str | None]] = []
    missing: list[str] = []
    # A young intent whose worker has not given up may still be POSTed (a worker frozen between
    # its commit and its POST): it stays pending and counts as working (`open_account`).
    flying = {o.client_order_id for o in view.open_orders if o.status == intent_store.INTENT}
    for p in intent_store.pending(s, account_id, strategy_id):
        order = view.broker.get_by_client_id(p.client_order_id)
        if order is None:
            if p.client_order_id not in flying:
                missing.append(p.client_order_id)
            continue
        dead = order.died_unfilled
        found.append((order, f"the broker holds it as {order.status}, nothing filled" if dead else None))
        event("order reconciled", client_order_id=p.client_order_id, status=order.status, symbol=p.symbol)
        if p.strategy_id is None:
            continue
        decisions.append(_decision(p, order))
        if not dead and calendar.trading_date(p.minute) == day.trading_date:
            notional = p.qty * (p.price or order.filled_avg_price or 0.0)
            day = replace(
                day, trades_today=day.trades_today + 1, notional_today=day.notional_today + notional
            )
    run.intents.void(missing, NOT_AT_BROKER)
    if account_id not in run.adopted:
        run.adopted.add(account_id)
        found.extend(_orphans(s, view.broker, minute, {o.client_order_id for o, _ in found}))
    journal.record_orders(s, None, account_id, "strategy", None, found)
    return decisions, day


def _orphans(s: Session, broker: Broker, minute: datetime, seen: set[str]) -> list[tuple[Order, str | None]]:
    ours = [
        o
        for o in broker.recent_orders(minute - ADOPT_WINDOW)
        if o.client_order_id.startswith(CLIENT_ID_PREFIX) and o.client_order_id not in seen
    ]
    rows = intent_store.statuses(s, [o.client_order_id for o in ours])
    adopted: list[tuple[Order, str | None]] = []
    for o in ours:
        if rows.get(o.client_order_id) == intent_store.VOID:  # yet the broker holds it: overwrite the row
            adopted.append((o, "reconciled: the broker holds it, the journal had it void"))
            event("order reconciled", level=logging.WARNING, client_order_id=o.client_order_id,
                  status=o.status, was="void")  # fmt: skip
        elif o.client_order_id not in rows:
            adopted.append((o, "adopted: the broker holds it, the journal had no row"))
            event("order adopted", level=logging.WARNING, client_order_id=o.client_order_id, status=o.status)
    return adopted


def _decision(p: Pending, order: Order) -> Decision:
    payload = {
        "reconciled": True,
        "status": order.status,
        "filled_qty": order.filled_qty,
        "filled_avg_price": order.filled_avg_price,
        "broker_order_id": order.broker_order_id,
    }
    signal = Signal(p.symbol, Action(p.side.value), p.qty, "reconciled", payload)
    intent = OrderIntent(p.symbol, p.side, p.qty, p.price or 0.0, p.client_order_id)
    if order.died_unfilled:
        error = f"the broker holds it as {order.status}, nothing filled"
        return Decision(p.minute, signal, intent, None, Outcome.FAILED, order=order, error=error)
    return Decision(p.minute, signal, intent, None, Outcome.RECONCILED, order=order)


def working_exposure(
    s: Session,
    view: AccountView,
    features: Mapping[str, Features],
    minute: datetime,
    reconciled: Sequence[Decision],
) -> exposure.Working:
    """The working orders' exposure; orders reconciled for this very minute count as working too,
    so a retried minute never sends a second order beside the one it already placed.

    `reserved` is what the account's buying power does not already hold back: a real broker's
    buying power (Alpaca's) nets its own open buys, so only intents it does not hold yet count."""
    prices = {k: f.close for k, f in features.items() if f.close is not None}
    others = sorted({o.symbol for o in view.open_orders if o.working_qty > 0} - set(prices))
    for sym, window in market.recent_closes(s, others, minute, 1).items() if others else ():
        if window.bars:
            prices[sym] = window.bars[-1][1]
    held = exposure.working(view.open_orders, prices)
    if view.broker.authoritative:
        unheld = [o for o in view.open_orders if o.status == intent_store.INTENT]
        held = replace(held, reserved=exposure.working(unheld, prices).reserved)
    again = {x.signal.symbol for x in reconciled if x.minute == minute}
    return replace(held, symbols=held.symbols | again) if again else held


def sender(
    broker: Broker, run: Invocation, strategy_id: RowId | None, account_id: RowId, minute: datetime
) -> Submit:
    """`broker.submit`, preceded for a real broker by the intent committed on its own connection.

    Past the invocation's deadline nothing is sent (NotSent, checked before the intent is
    written; the broker checks `send_by` again before each POST). An intent whose send raised is
    marked given up, so reconciliation may void it at once when the broker does not hold it."""

    def send(intent: OrderIntent) -> Order:
        if run.past_deadline():
            raise NotSent(DEADLINE, "past the invocation's deadline: not sent")
        if not broker.authoritative:
            return broker.submit(intent)
        source = "strategy" if strategy_id is not None else "manual"
        if run.intents.write(strategy_id, account_id, source, minute, intent):
            try:
                return broker.submit(replace(intent, send_by=run.send_by))
            except NotSent as exc:  # refused before any attempt: nothing is at the broker
                run.intents.void([intent.client_order_id], f"not sent: {exc}")
                raise
            except Exception as exc:
                run.intents.gave_up(intent.client_order_id, f"{type(exc).__name__}: {exc}")
                raise
        found = broker.get_by_client_id(intent.client_order_id)  # the id already names an order
        if found is None:
            raise OrderRejected(None, f"client id {intent.client_order_id} is taken: nothing sent")
        return found

    return send


def summarise(run_id: uuid.UUID, name: str, minute: datetime, decisions: Sequence[Decision]) -> StrategyRun:
    """`order` events for the decisions with an order, a `series break` warning; the counts."""
    if blind := held_through_break(decisions):  # no exit signal until the window refills
        event("series break", level=logging.WARNING, strategy=name, symbols=blind, minute=f"{minute}")
    for x in decisions:
        if x.intent is not None:
            event(
                "order",
                run_id=str(run_id),
                strategy=name,
                minute=minute.isoformat(),
                symbol=x.signal.symbol,
                side=x.intent.side.value,
                qty=x.intent.qty,
                outcome=x.outcome.value,
                risk_code=x.verdict.code if x.verdict else None,
                client_order_id=x.intent.client_order_id,
                error=x.error,
            )
    return processed_run(name, decisions)
