"""A person's paper order (`strategy-engine trade`), through the broker path and journal the tick uses."""

from __future__ import annotations

import uuid
from datetime import timedelta

from strategy_engine.core.errors import InputError, LiveTradingRefused, NotFound
from strategy_engine.core.models import BrokerAccount, Order, OrderIntent, Side
from strategy_engine.core.strategies.base import check_symbol
from strategy_engine.engine import Deps, now_minute, open_account
from strategy_engine.logs import event
from strategy_engine.store import Session, journal, market
from strategy_engine.store import accounts as acct_store


def manual_trade(
    s: Session, account_name: str, symbol: str, side: str, qty: float, *, deps: Deps | None = None
) -> Order:
    """A person's paper order, through the same broker path and journal as the tick's orders.

    It is not subject to the strategy risk gate (no strategy owns it) but it is paper-only,
    validated before anything is sent, and recorded with `source = 'manual'`.
    """
    deps = deps or Deps()
    symbol = symbol.strip().upper()
    try:
        check_symbol(symbol)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if side not in ("buy", "sell"):
        raise InputError(f"invalid side {side!r} (buy or sell)")
    if not qty > 0 or qty > 1_000_000:
        raise InputError(f"invalid qty {qty!r} (must be > 0)")
    found = acct_store.find_account(s, account_name)
    if found is None:
        raise NotFound(f"unknown account {account_name!r}")
    account_id, broker_name, is_paper = found
    if not is_paper:
        raise LiveTradingRefused(f"account {account_name!r} is not a paper account")
    account = BrokerAccount(account_id, account_name, broker_name)
    minute = now_minute()
    with s.transaction():
        last = market.recent_closes(s, [symbol], minute + timedelta(minutes=1), 1)[symbol].bars
        price = last[-1][1] if last else 0.0
        if account.broker != "alpaca" and price <= 0:
            raise InputError(f"no price for {symbol}: the simulated broker fills at the last close")
        broker, _, _ = open_account(s, deps, account, minute)
        intent = OrderIntent(symbol, Side(side), qty, price, "se-m-" + uuid.uuid4().hex[:24])
        order = broker.submit(intent)
        journal.record_orders(s, None, account.id, "manual", minute, [(order, None)])
        if not broker.authoritative:
            acct_store.save_mirror(s, account.id, broker.account(), broker.positions())
    event(
        "order",
        source="manual",
        account=account_name,
        symbol=symbol,
        side=side,
        qty=qty,
        client_order_id=order.client_order_id,
        status=order.status,
    )
    return order
