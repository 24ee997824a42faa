"""A person's paper order (`strategy-engine trade`): a safe order, not a bypass.

The same path as the tick's orders: the account locked, the broker's account, positions and
working orders read, the write-ahead intent committed before a real broker is asked, the answer
recorded with `source = 'manual'`. Before anything is sent it passes the account-level checks:
a quantity Alpaca takes and under the manual cap, a price no older than the stale-data limit,
buying power net of working buys, no second order beside a working one, and no short unless the
caller says `allow_short` (the broker then decides whether the account may short). Its client id
is the caller's, or derived from (account, symbol, side, qty, minute), so re-running the command
within the minute finds the order instead of placing a second one. Under the derived id, the same
order placed in the last MANUAL_DUPLICATE_WINDOW_MINUTES is refused unless the caller says
`again` (a re-run a minute later, after a timeout, must not double it). A re-run under the same
id whose earlier attempt never reached the broker (an outage) voids that intent and sends.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import datetime, timedelta
from types import MappingProxyType

from strategy_engine import execution, reconciliation
from strategy_engine.account_view import AccountView
from strategy_engine.core import calendar, risk
from strategy_engine.core.data_quality import last_close
from strategy_engine.core.decide import minute_key
from strategy_engine.core.errors import InputError, LiveTradingRefused, NotFound, NotSent, OrderRejected
from strategy_engine.core.models import BrokerAccount, DayState, Features, Limits, Order, OrderIntent, Side
from strategy_engine.core.strategies.base import check_symbol, qty_problem
from strategy_engine.deps import Deps
from strategy_engine.logs import event
from strategy_engine.settings import Settings, get_settings
from strategy_engine.store import Session, journal, market
from strategy_engine.store import accounts as acct_store
from strategy_engine.store.intents import INTENT, IntentLog

DEFAULT_ACCOUNT = "alpaca-paper"  # created on first use when Alpaca keys are set
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def manual_client_id(account: str, symbol: str, side: str, qty: float, minute_text: str) -> str:
    """`se-m-` + 24 hex of sha256(account|symbol|side|qty|T): the same command in the same minute
    names the same order."""
    digest = hashlib.sha256(f"{account}|{symbol}|{side}|{qty!r}|{minute_text}".encode()).hexdigest()
    return "se-m-" + digest[:24]


def manual_trade(
    s: Session,
    account_name: str,
    symbol: str,
    side: str,
    qty: float,
    *,
    client_order_id: str | None = None,
    allow_short: bool = False,
    again: bool = False,
    deps: Deps | None = None,
) -> Order:
    """Place (or find again) one manual paper order; returns the broker's view of it.

    Raises InputError (nothing written) for bad input or a failed check, with one readable line;
    NotFound for an unknown account; LiveTradingRefused for a non-paper account; Unavailable
    for an outage (a write-ahead intent may remain: a re-run with the same id, or the next run's
    reconciliation, settles it). InputError too when, under the default id and without `again`,
    the same manual order was placed within MANUAL_DUPLICATE_WINDOW_MINUTES.
    """
    deps, settings = deps or Deps(), get_settings()
    symbol = symbol.strip().upper()
    try:
        check_symbol(symbol)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if side not in ("buy", "sell"):
        raise InputError(f"invalid side {side!r} (buy or sell)")
    problem = qty_problem(qty)
    if problem is not None or qty > settings.manual_max_qty:
        raise InputError(
            problem or f"qty {qty:g} is over the manual cap of {settings.manual_max_qty:g} shares"
        )
    if client_order_id is not None and not _CLIENT_ID.match(client_order_id):
        raise InputError("client order id must be 1-128 characters of letters, digits and . _ : -")
    minute = calendar.floor_minute(deps.clock())
    cid = client_order_id or manual_client_id(account_name, symbol, side, qty, minute_key(minute))
    sending = execution.Invocation(IntentLog(s))
    pol = deps.policy
    intent = OrderIntent(symbol, Side(side), qty, 0.0, cid)
    try:
        with s.transaction(lock_timeout=pol.lock_timeout_seconds, idle_timeout=pol.idle_timeout_seconds):
            account = _account(s, account_name, settings)
            dedupe = client_order_id is None and not again
            order, sent, refused = _place(s, deps, sending, account, intent, allow_short, dedupe, settings)
    finally:
        sending.intents.close()
    if refused is not None:  # Alpaca's refusal is recorded (committed above); the caller gets exit 2
        raise InputError(refused)
    event("order", source="manual", account=account_name, symbol=symbol, side=side, qty=qty,
          client_order_id=order.client_order_id, status=order.status, sent=sent)  # fmt: skip
    return order


def _account(s: Session, name: str, settings: Settings) -> BrokerAccount:
    found = acct_store.find_account(s, name)
    if found is None:
        if name != DEFAULT_ACCOUNT or not (settings.alpaca_api_key and settings.alpaca_secret_key):
            hint = f" (the default {DEFAULT_ACCOUNT!r} is created when ALPACA_API_KEY/SECRET are set)"
            raise NotFound(f"unknown account {name!r}" + ("" if name != DEFAULT_ACCOUNT else hint))
        acct_store.ensure_account(s, name, "alpaca")
        found = acct_store.find_account(s, name)
        if found is None:  # created just above in this transaction: cannot happen
            raise NotFound(f"unknown account {name!r}")
    account, is_paper = found
    if not is_paper:
        raise LiveTradingRefused(f"account {name!r} is not a paper account")
    return account


def _place(
    s: Session,
    deps: Deps,
    sending: execution.Invocation,
    account: BrokerAccount,
    intent: OrderIntent,
    allow_short: bool,
    dedupe: bool,
    settings: Settings,
) -> tuple[Order, bool, str | None]:
    """(order, sent now, Alpaca's refusal) inside the caller's transaction. An order the journal
    already holds under this client id is found again, not re-checked or re-sent (unless it never
    reached the broker); with `dedupe`, the same order placed recently is refused."""
    known = journal.find_order(s, intent.client_order_id)
    if known is not None and (known.symbol, known.side, known.qty) != (
        intent.symbol,
        intent.side,
        intent.qty,
    ):
        raise InputError(f"client order id {intent.client_order_id} already names another order")
    minute = calendar.floor_minute(deps.clock())
    view = deps.open_account(s, sending, account, minute)
    if known is not None:
        found = _again(s, view, account, known, minute)
        if found is not None:
            return found
        sending.intents.void([known.client_order_id], reconciliation.NOT_AT_BROKER)  # the lock is held
    elif dedupe:
        _refuse_recent(s, account, intent, minute, settings.manual_duplicate_window_minutes)
    intent = _checked(s, view, intent, minute, allow_short, settings)
    (order,) = execution.launch(view.broker, sending, None, account.id, minute, [intent])()
    if isinstance(order, NotSent):  # a manual trade has no deadline: only the broker's own refusal
        raise order
    if isinstance(order, OrderRejected):
        exc = order
        if not view.broker.authoritative:
            raise InputError(f"refused by the simulated broker (as Alpaca would): {exc.message}") from None
        rejected = Order(
            intent.client_order_id, "", intent.symbol, intent.side, intent.qty, "rejected", 0.0, None
        )
        journal.record_orders(s, None, account.id, "manual", minute, [(rejected, str(exc))])
        who = "refused by Alpaca" if exc.reached_broker else "refused before sending"
        return rejected, True, f"{who}: {exc.message}"
    journal.record_orders(s, None, account.id, "manual", minute, [(order, None)])
    if not view.broker.authoritative:
        acct_store.save_mirror(s, account.id, view.broker.account(), view.broker.positions())
    return order, True, None


def _refuse_recent(
    s: Session, account: BrokerAccount, intent: OrderIntent, minute: datetime, window: float
) -> None:
    """InputError naming the earlier order when the same manual order went out within `window` minutes."""
    if window <= 0:
        return
    since = minute - timedelta(minutes=window)
    earlier = journal.recent_manual(s, account.id, intent.symbol, intent.side.value, intent.qty, since)
    if earlier is not None:
        cid, status, at = earlier
        raise InputError(
            f"the same order ({intent.side.value} {intent.qty:g} {intent.symbol} on {account.name})"
            f" went out at {at:%H:%M} UTC as {cid} ({status}): pass --again to place another one"
        )


def _again(
    s: Session, view: AccountView, account: BrokerAccount, known: Order, minute: datetime
) -> tuple[Order, bool, str | None] | None:
    """A re-run: the order the journal holds, as the broker now sees it; nothing is sent. None
    when it is an intent the broker does not hold and whose sender gave up: it may be sent."""
    if not view.broker.authoritative:
        return known, False, None  # the simulated broker's journal is its truth
    found = view.broker.get_by_client_id(known.client_order_id)
    if found is None:
        cid = known.client_order_id
        if known.status == INTENT and not any(o.client_order_id == cid for o in view.open_orders):
            return None
        why = (
            "an earlier attempt may still be sending it"
            if known.status == INTENT
            else "the next run settles it"
        )
        raise InputError(f"client order id {cid} is recorded ({known.status}) but not at the broker: {why}")
    journal.record_orders(s, None, account.id, "manual", minute, [(found, None)])
    return found, False, None


def _checked(
    s: Session,
    view: AccountView,
    intent: OrderIntent,
    minute: datetime,
    allow_short: bool,
    settings: Settings,
) -> OrderIntent:
    """The intent priced at the last close, once the account-level checks pass; else InputError.

    The close is split-adjusted as of when the order can fill: a split whose ex time falls
    before the next open changes what an order sent while closed costs."""
    sym = intent.symbol
    t = minute + timedelta(minutes=1)
    fills = max(t, calendar.fill_minute(minute))
    window = market.recent_closes(s, [sym], t, 1, splits_until=fills)[sym]
    ts, price = window.last, last_close(window, fills)  # split-adjusted, as the tick prices it
    if ts is None or price is None:
        raise InputError(f"no price for {sym} in market_data_1m: a manual order needs a recent bar")
    priced = replace(intent, price=price)
    features = {sym: Features(sym, 1, price, None, ts, 0, 0)}
    working = execution.working_exposure(s, view, features, minute, [])
    ctx = risk.RiskContext(
        minute=minute,
        is_active=True,
        market_open=True,  # a day order sent while closed is queued by Alpaca: not refused here
        last_bar_ts=MappingProxyType({sym: ts}),
        max_bar_age_seconds=settings.manual_max_bar_age_seconds,
        day=DayState(minute.date()),
        positions=MappingProxyType({p.symbol: p.qty for p in view.positions}),
        last_trade_at=MappingProxyType({}),
        buying_power=view.account.buying_power - working.reserved,
        working=working,
        sells_release_power=not view.broker.authoritative,
    )
    after = risk.exposure(ctx, sym) + risk.signed_qty(priced)
    if intent.side is Side.SELL and after < 0:
        short = min(intent.qty, -after)
        if not allow_short:
            raise InputError(
                f"selling {intent.qty:g} {sym} would open a short of {short:g}: pass --allow-short"
            )
        problem = qty_problem(short, short=True)
        if problem is not None:
            raise InputError(problem)
    verdict = risk.evaluate(priced, ctx, Limits())
    if not verdict.approved:
        failed = next(c for c in verdict.checks if not c.passed)
        raise InputError(
            f"refused: {failed.code} (observed {_show(failed.observed)}, limit {_show(failed.limit)})"
        )
    return priced


def _show(value: object) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)
