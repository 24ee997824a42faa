"""Creating strategies and accounts: config is validated before anything is saved."""

from __future__ import annotations

from typing import Any

from strategy_engine.core.errors import InputError
from strategy_engine.core.models import Account, Limits, RowId
from strategy_engine.core.strategies import parse_config
from strategy_engine.store import Session
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store


def save_strategy(
    s: Session,
    name: str,
    strategy_type: str,
    config: Any,
    *,
    account: str,
    broker: str = "simulated",
    is_active: bool = False,
    limits: Limits | None = None,
    initial_cash: float | None = None,
) -> RowId:
    """Validate, then write definition, account (if new) and limits in one transaction."""
    if not isinstance(config, dict):
        raise InputError("config must be a JSON object")
    if broker not in ("simulated", "alpaca"):
        raise InputError(f"invalid broker {broker!r} (simulated or alpaca)")
    cfg = parse_config(strategy_type, config)
    with s.transaction():
        found = acct_store.find_account(s, account)
        account_id = found[0].id if found else acct_store.ensure_account(s, account, broker)
        if initial_cash is not None:
            acct_store.save_mirror(s, account_id, Account(initial_cash, initial_cash, initial_cash), [])
        sid = strat_store.upsert_definition(
            s, name, strategy_type, cfg.model_dump(mode="json"), is_active=is_active, account_id=account_id
        )
        if limits is not None:
            strat_store.upsert_limits(s, sid, limits)
    return sid
