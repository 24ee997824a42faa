"""The execution half of a minute: the account as the broker holds it, reconciliation, sending.

`engine.py` calls these in order inside a strategy's transaction:

1. `account_view.open_account`: the account as the broker holds it, read once per invocation
   and carried forward (see there), the journal's unsettled orders refreshed from it.
2. `reconcile`: for each write-ahead intent a minute never completed, ask the broker by client id;
   record what it holds and log the decision `reconciled` (or `failed` when the broker rejected or
   canceled it unfilled; `void` when it never got there). Once per invocation and account, adopt
   recent orders under our client-id prefix that have no row at all.
3. `working_exposure` and `post`: what the working orders hold back, and the sending of a
   strategy's approved orders: their intents committed in one statement on a connection of
   their own, then the orders posted at once, on threads, their answers in order.

The simulated broker's truth is the minute's own transaction, so it needs no write-ahead: a crash
rolls its fills back with everything else. It goes through the same steps, with no working orders.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from strategy_engine.account_view import AccountView, Carried
from strategy_engine.brokers.base import Broker
from strategy_engine.concurrency import each
from strategy_engine.core import calendar, exposure
from strategy_engine.core.decide import Answer, ask, processed_run
from strategy_engine.core.errors import OrderRejected
from strategy_engine.core.models import (
    Action,
    DayState,
    Decision,
    Features,
    Order,
    OrderIntent,
    Outcome,
    RowId,
    Signal,
    StrategyRun,
)
from strategy_engine.logs import event
from strategy_engine.store import Session, journal, market
from strategy_engine.store import intents as intent_store
from strategy_engine.store.intents import IntentLog, Pending

CLIENT_ID_PREFIX = "se-"  # every client id the engine sends (strategy `se-…`, manual `se-m-…`)
NOT_AT_BROKER = "not at the broker: never sent, or refused before the answer was recorded"


@dataclass
class Invocation:
    """What one tick shares between its strategies: the intent connection, adopted accounts, the
    Alpaca accounts read so far."""

    intents: IntentLog
    adopted: set[RowId] = field(default_factory=set)
    carried: dict[RowId, Carried] = field(default_factory=dict)


def reconcile(
    s: Session,
    view: AccountView,
    account_id: RowId,
    strategy_id: RowId,
    day: DayState,
    run: Invocation,
    minute: datetime,
    pending: Sequence[Pending],
) -> tuple[list[Decision], DayState]:
    """Settle the intents minutes left behind (`pending`, read under the claim); returns the
    strategy's decisions to log and its day counters with the reconciled orders counted (those of
    the day of `day` only). An intent is looked up in the invocation's list of recent orders,
    else by its client id (the list was read before it, or does not reach back that far)."""
    if not view.broker.authoritative:
        return [], day
    decisions: list[Decision] = []
    found: list[tuple[Order, str | None]] = []
    missing: list[str] = []
    for p in pending:
        order = view.recent.get(p.client_order_id) or view.broker.get_by_client_id(p.client_order_id)
        if order is None:
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
        found.extend(_orphans(s, view.recent.values(), {o.client_order_id for o, _ in found}))
    journal.record_orders(s, None, account_id, "strategy", None, found)
    return decisions, day


def _orphans(s: Session, recent: Iterable[Order], seen: set[str]) -> list[tuple[Order, str | None]]:
    ours = [
        o for o in recent if o.client_order_id.startswith(CLIENT_ID_PREFIX) and o.client_order_id not in seen
    ]
    rows = intent_store.known(s, [o.client_order_id for o in ours])
    adopted: list[tuple[Order, str | None]] = [
        (o, "adopted: the broker holds it, the journal had no row")
        for o in ours
        if o.client_order_id not in rows
    ]
    for o, _ in adopted:
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
    so a retried minute never sends a second order beside the one it already placed."""
    prices = {k: f.close for k, f in features.items() if f.close is not None}
    others = sorted({o.symbol for o in view.open_orders if o.working_qty > 0} - set(prices))
    for sym, window in market.recent_closes(s, others, minute, 1).items() if others else ():
        if window.bars:
            prices[sym] = window.bars[-1][1]
    held = exposure.working(view.open_orders, prices)
    again = {x.signal.symbol for x in reconciled if x.minute == minute}
    return replace(held, symbols=held.symbols | again) if again else held


def post(
    broker: Broker,
    run: Invocation,
    strategy_id: RowId | None,
    account_id: RowId,
    minute: datetime,
    intents: Sequence[OrderIntent],
) -> list[Answer]:
    """Send the orders; the broker's answer to each, in order (a refusal as `OrderRejected`).

    A real broker: the intents committed first (one statement, their own connection), then the
    orders posted at once on threads; an id that already names an order is looked up instead of
    re-sent. Every request ends before this returns; an error other than a refusal (an outage)
    is raised then, the first in order, and the intents left behind are reconciled by the next
    run. The simulated broker: one after another, in order (its fills depend on it)."""
    if not broker.authoritative:
        return [ask(broker.submit, i) for i in intents]
    source = "strategy" if strategy_id is not None else "manual"
    written = run.intents.write(strategy_id, account_id, source, minute, intents)

    def send(intent: OrderIntent) -> Order:
        if intent.client_order_id in written:
            return broker.submit(intent)
        found = broker.get_by_client_id(intent.client_order_id)  # the id already names an order
        if found is None:
            raise OrderRejected(None, f"client id {intent.client_order_id} is taken: nothing sent")
        return found

    return each(lambda i: ask(send, i), intents)


def summarise(run_id: uuid.UUID, name: str, minute: datetime, decisions: Sequence[Decision]) -> StrategyRun:
    """One `order` event per decision that had an order (sent, blocked, failed or reconciled); the counts."""
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
