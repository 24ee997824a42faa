"""Reconciliation (`execution.py` step 2): what the broker holds of the intents minutes left behind.

For each write-ahead intent a minute never completed, find it in the invocation's list of recent
orders, else ask the broker by client id; record what it holds and log the decision
`reconciled` (or `failed` when the broker rejected or canceled it unfilled; `void` when it never
got there). Once per invocation and account, adopt recent orders under our client-id prefix that
have no row at all (or a `void` one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

from strategy_engine.account_view import AccountView
from strategy_engine.core import calendar
from strategy_engine.core.models import Action, DayState, Decision, Order, OrderIntent, Outcome, RowId, Signal
from strategy_engine.execution import Invocation
from strategy_engine.logs import event
from strategy_engine.store import Session, journal
from strategy_engine.store import intents as intent_store
from strategy_engine.store.intents import Pending

CLIENT_ID_PREFIX = "se-"  # every client id the engine sends (strategy `se-…`, manual `se-m-…`)
NOT_AT_BROKER = "not at the broker: never sent, or refused before the answer was recorded"


def reconcile(
    s: Session,
    view: AccountView,
    account_id: RowId,
    day: DayState,
    run: Invocation,
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
    # A young intent whose worker has not given up may still be POSTed (a worker frozen between
    # its commit and its POST): it stays pending and counts as working (`account_view`).
    flying = {o.client_order_id for o in view.open_orders if o.status == intent_store.INTENT}
    for p in pending:
        order = view.recent.get(p.client_order_id) or view.broker.get_by_client_id(p.client_order_id)
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
        found.extend(_orphans(s, view.recent.values(), {o.client_order_id for o, _ in found}))
    journal.record_orders(s, None, account_id, "strategy", None, found)
    return decisions, day


def _orphans(s: Session, recent: Iterable[Order], seen: set[str]) -> list[tuple[Order, str | None]]:
    ours = [
        o for o in recent if o.client_order_id.startswith(CLIENT_ID_PREFIX) and o.client_order_id not in seen
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
