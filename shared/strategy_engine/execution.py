"""The execution half of a minute: reconciliation, what working orders hold back, sending.

`engine.py` calls these in order while it stages a strategy-minute (in its transaction or
savepoint):

1. `account_view.open_account`: the account as the broker holds it, read once per invocation
   and carried forward (see there), the journal's unsettled orders refreshed from it.
2. `reconciliation.reconcile`: the write-ahead intents earlier minutes left behind, settled.
3. `working_exposure`, `risk_context` and `trade`: what the working orders hold back, the
   context the risk gate checks against, and the sending of the strategy's approved orders:
   for Alpaca their intents committed in one statement on a connection of their own, then the
   orders posted at once on threads (`launch`), their answers awaited when the minute is
   recorded. The manual trade waits for `launch`'s answer at once.

The simulated broker's truth is the minute's own transaction, so it needs no write-ahead: a crash
rolls its fills back with everything else. It goes through the same steps, with no working orders.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

from strategy_engine import concurrency
from strategy_engine.account_view import AccountView, Carried, Prefetch, carry
from strategy_engine.brokers.base import Broker
from strategy_engine.core import exposure
from strategy_engine.core.data_quality import held_through_break, last_close
from strategy_engine.core.decide import (
    DEADLINE,
    Answer,
    MinuteInputs,
    ask,
    decide,
    decide_minute,
    processed_run,
    settle,
)
from strategy_engine.core.errors import NotSent, OrderRejected
from strategy_engine.core.models import (
    DayState,
    Decision,
    Features,
    Order,
    OrderIntent,
    RowId,
    StrategyRun,
)
from strategy_engine.core.risk import RiskContext
from strategy_engine.logs import event
from strategy_engine.store import Session, market
from strategy_engine.store.intents import IntentLog
from strategy_engine.store.session import Later
from strategy_engine.store.strategies import Claim

NOT_SENT_WHY = "past the invocation's deadline: not sent"


def _never() -> bool:
    return False


@dataclass
class Invocation:
    """What one tick shares between the strategies of an account group: the intent connection,
    adopted accounts, the Alpaca accounts read so far (and those read ahead), and the deadline:
    `past_deadline()` on the invocation's clock, `send_by` on the wall clock (checked by the
    broker before each POST)."""

    intents: IntentLog
    adopted: set[RowId] = field(default_factory=set)
    carried: dict[RowId, Carried] = field(default_factory=dict)
    past_deadline: Callable[[], bool] = _never
    send_by: datetime | None = None
    ahead: Prefetch | None = None  # the accounts' first reads, sent as the tick started
    in_flight: list[Callable[[], object]] = field(default_factory=list)  # answers of orders sent

    @classmethod
    def on(
        cls,
        intents: IntentLog,
        past_deadline: Callable[[], bool],
        send_by: datetime | None,
        ahead: Prefetch | None,
    ) -> Invocation:
        """An account group's shared state around the invocation's intent log."""
        return cls(intents, past_deadline=past_deadline, send_by=send_by, ahead=ahead)


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
    buying power (Alpaca's) nets the open buys it held when it was read, so only `view.unheld`
    counts (intents it does not hold yet, orders placed since the read)."""
    prices = {**view.prices, **{k: f.close for k, f in features.items() if f.close is not None}}
    others = sorted({o.symbol for o in [*view.open_orders, *view.unheld] if o.working_qty > 0} - set(prices))
    for sym, window in market.recent_closes(s, others, minute, 1).items() if others else ():
        if (close := last_close(window, minute)) is not None:
            prices[sym] = close
    held = exposure.working(view.open_orders, prices)
    if view.broker.authoritative:
        held = replace(held, reserved=exposure.working(view.unheld, prices).reserved)
    again = {x.signal.symbol for x in reconciled if x.minute == minute}
    return replace(held, symbols=held.symbols | again) if again else held


def risk_context(
    minute: datetime,
    claimed: Claim,
    max_bar_age_seconds: float,
    features: Mapping[str, Features],
    view: AccountView,
    day: DayState,
    working: exposure.Working,
    last_trades: Mapping[str, datetime],
) -> RiskContext:
    """What the risk gate checks a strategy-minute's orders against (`core/risk.py`): `day` the
    counters with reconciled orders counted, buying power net of what `working` reserves."""
    return RiskContext(
        minute=minute,
        is_active=claimed.is_active,
        market_open=True,
        last_bar_ts=MappingProxyType({k: f.last_bar_ts for k, f in features.items() if f.last_bar_ts}),
        max_bar_age_seconds=max_bar_age_seconds,
        day=day,
        positions=MappingProxyType({pos.symbol: pos.qty for pos in view.positions}),
        last_trade_at=MappingProxyType(dict(last_trades)),
        buying_power=view.account.buying_power - working.reserved,
        working=working,
        sells_release_power=not view.broker.authoritative,
    )


def trade(
    view: AccountView,
    run: Invocation,
    strategy_id: RowId,
    account_id: RowId,
    inputs: MinuteInputs,
    ctx: RiskContext,
) -> Later[tuple[list[Decision], RiskContext]]:
    """The strategy-minute's orders decided and sent; the answer gives its decisions with the
    broker's answers and the risk context after them.

    Alpaca: every symbol decided first (each approved order reserved), then the orders posted at
    once (`launch`): they are under way when this returns, so the account's next strategy can
    be decided while they travel, and it counts them as working orders (`carry`). Settled when
    the answer is called: a refusal releases its reservation after the minute, so it may have
    blocked a later symbol of that minute (conservative). Simulated: `decide_minute`, one order
    at a time in symbol order, as the backfill does (parity), the deadline checked before each."""
    broker = view.broker
    if not broker.authoritative:

        def submit(intent: OrderIntent) -> Order:
            if run.past_deadline():
                raise _not_sent()
            return broker.submit(intent)

        done = decide_minute(inputs, ctx, submit)
        return lambda: done
    decided = decide(inputs, ctx)
    answers = launch(broker, run, strategy_id, account_id, inputs.minute, decided.intents)
    carry(run.carried, account_id, decided.intents)
    settled = concurrency.once(lambda: settle(decided, answers()))  # awaited once, whoever asks
    run.in_flight.append(settled)  # awaited by the account's group at the latest (`fanout`)
    return settled


def launch(
    broker: Broker,
    run: Invocation,
    strategy_id: RowId | None,
    account_id: RowId,
    minute: datetime,
    intents: Sequence[OrderIntent],
) -> Later[list[Answer]]:
    """Send the orders; the answer gives the broker's answer to each, in order (a refusal as
    `OrderRejected`, an order not sent because the deadline passed as `NotSent`).

    A real broker: past the deadline nothing is written or sent. Else the intents are committed
    first (one statement, their own connection), then the orders posted at once on threads, the
    broker checking `send_by` before each POST; an id that already names an order is looked up
    instead of re-sent. The answer waits for every request to end. An intent refused before any
    attempt is then voided; one whose send raised is marked given up (so reconciliation may void
    it at once); both on the caller's thread. An error other than a refusal (an outage) is raised
    then, the first in order, and the intents left behind are reconciled by the next run.
    The simulated broker: one after another, in order (its fills depend on it), the deadline
    checked before each, done before this returns."""
    if not broker.authoritative:
        done = [_not_sent() if run.past_deadline() else ask(broker.submit, i) for i in intents]
        return lambda: done
    if run.past_deadline():
        return lambda: [_not_sent() for _ in intents]
    source = "strategy" if strategy_id is not None else "manual"
    written = run.intents.write(strategy_id, account_id, source, minute, intents)

    def send(intent: OrderIntent) -> Answer | Exception:
        try:
            if intent.client_order_id in written:
                return ask(broker.submit, replace(intent, send_by=run.send_by))
            found = broker.get_by_client_id(intent.client_order_id)  # the id already names an order
            if found is None:
                return OrderRejected(None, f"client id {intent.client_order_id} is taken: nothing sent")
            return found
        except Exception as exc:  # an outage: marked below, raised once every request has ended
            return exc

    results = concurrency.launch(send, intents)
    return lambda: _answers(run, intents, results())


def _answers(
    run: Invocation, intents: Sequence[OrderIntent], results: Sequence[Answer | Exception]
) -> list[Answer]:
    unsent = [(i.client_order_id, r) for i, r in zip(intents, results, strict=True) if isinstance(r, NotSent)]
    if unsent:  # refused before any attempt: nothing is at the broker
        run.intents.void([cid for cid, _ in unsent], f"not sent: {unsent[0][1]}")
    answers: list[Answer] = []
    outage: Exception | None = None
    for intent, r in zip(intents, results, strict=True):
        if isinstance(r, Order | OrderRejected | NotSent):
            answers.append(r)
            continue
        run.intents.gave_up(intent.client_order_id, f"{type(r).__name__}: {r}")
        outage = outage or r
    if outage is not None:
        raise outage
    return answers


def _not_sent() -> NotSent:
    return NotSent(DEADLINE, NOT_SENT_WHY)


def summarise(run_id: uuid.UUID, name: str, minute: datetime, decisions: Sequence[Decision]) -> StrategyRun:
    """`order` events for the decisions with an order, a `series break` warning; the counts."""
    if blind := held_through_break(decisions):  # no exit signal until the window refills
        event("series break", level=logging.WARNING, strategy=name, symbols=blind, minute=minute.isoformat())
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
