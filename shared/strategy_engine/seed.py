"""Creating strategies and accounts: config and limits are validated before anything is saved.

A new strategy gets `DEFAULT_LIMITS` (conservative) for every limit it is not given; an existing
one keeps its stored limits for every limit it is not given. No limit (None) is an explicit
choice: `{"max_daily_trades": null}`. `is_active=None` keeps a stored strategy's activity (a new
one starts inactive): only `strategy enable|disable` (or an explicit value) switch it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from typing import Any

from strategy_engine.core.errors import InputError
from strategy_engine.core.models import Account, Limits, RowId
from strategy_engine.core.strategies import parse_config
from strategy_engine.store import Session
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store

BROKERS = ("simulated", "alpaca")
MAX_NAME = 200
# Small enough that a config mistake (a zero too many in order_qty) is blocked, not traded.
DEFAULT_LIMITS = Limits(
    max_daily_trades=20,
    max_position_size=100,
    max_notional_per_trade=5_000,
    max_notional_per_day=25_000,
    max_open_positions=5,
    cool_down_minutes=5,
)
LIMIT_NAMES = tuple(f.name for f in dataclasses.fields(Limits))
_INTEGER_LIMITS = ("max_daily_trades", "max_open_positions")


def clean_name(name: str, what: str = "name") -> str:
    """The name trimmed; InputError when empty, too long or holding control characters."""
    out = name.strip()
    if not out:
        raise InputError(f"{what} must not be empty")
    if len(out) > MAX_NAME or any(ord(c) < 32 for c in out):
        raise InputError(f"invalid {what} {out[:40]!r}: 1 to {MAX_NAME} printable characters")
    return out


def parse_limits(doc: Any) -> dict[str, float | int | None]:
    """A JSON object of limits (a subset of LIMIT_NAMES, each >= 0 or null) -> the given values."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise InputError(f"limits is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(doc, dict):
        raise InputError("limits must be a JSON object, e.g. '{\"max_notional_per_trade\": 5000}'")
    out: dict[str, float | int | None] = {}
    for key, value in doc.items():
        if key not in LIMIT_NAMES:
            raise InputError(f"unknown limit {key!r} (known: {', '.join(LIMIT_NAMES)})")
        if value is None:
            out[key] = None
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not value >= 0
            or not math.isfinite(value)  # Infinity would be a hidden no-limit: null says it
        ):
            raise InputError(f"limit {key} must be a finite number >= 0 or null, got {value!r}")
        if key in _INTEGER_LIMITS and value != int(value):
            raise InputError(f"limit {key} must be a whole number, got {value!r}")
        out[key] = int(value) if key in _INTEGER_LIMITS else float(value)
    return out


def check_broker(broker: str, settings: Any = None) -> None:
    """InputError for an unknown broker, or Alpaca without both keys configured."""
    if broker not in BROKERS:
        raise InputError(f"invalid broker {broker!r} (simulated or alpaca)")
    if broker == "alpaca":
        from strategy_engine.settings import get_settings

        st = settings or get_settings()
        if st.alpaca_api_key is None or st.alpaca_secret_key is None:
            raise InputError("an alpaca account needs ALPACA_API_KEY and ALPACA_SECRET_KEY set")


def create_account(s: Session, name: str, broker: str, cash: float | None) -> RowId:
    """A new account; a simulated one is funded with `cash` (required > 0). InputError if it exists."""
    name = clean_name(name, "account name")
    check_broker(broker)
    if broker == "simulated" and (cash is None or not cash > 0 or cash > 1e12):
        raise InputError("--cash must be > 0 (and at most 1e12) for a simulated account")
    if broker == "alpaca" and cash is not None:
        raise InputError("--cash is for simulated accounts: an alpaca account's cash is the broker's")
    with s.transaction():
        s.durable()
        if acct_store.find_account(s, name) is not None:
            raise InputError(f"account {name!r} already exists")
        account_id = acct_store.ensure_account(s, name, broker)
        if cash is not None:
            acct_store.save_mirror(s, account_id, Account(cash, cash, cash), [])
    return account_id


def save_strategy(
    s: Session,
    name: str,
    strategy_type: str,
    config: Any,
    *,
    account: str,
    broker: str = "simulated",
    is_active: bool | None = False,
    limits: Limits | dict[str, Any] | None = None,
    initial_cash: float | None = None,
    require_keys: bool = False,
    new_account: bool = True,
) -> RowId:
    """Validate, then write definition, account (if new) and limits in one transaction.

    `limits`: a full `Limits` (written as is), a dict of some limits (merged over the stored ones,
    else over DEFAULT_LIMITS), or None (the stored limits, else DEFAULT_LIMITS). `require_keys`:
    refuse (InputError) an Alpaca account while the Alpaca keys are not configured, since every
    later tick of the strategy would fail. `new_account=False`: refuse (InputError) an account
    that does not exist rather than create it unfunded (the CLI: `account create` funds one).
    """
    name = clean_name(name)
    account = clean_name(account, "account name")
    if not isinstance(config, dict):
        raise InputError("config must be a JSON object")
    if broker not in BROKERS:
        raise InputError(f"invalid broker {broker!r} (simulated or alpaca)")
    cfg = parse_config(strategy_type, config)
    given = limits if isinstance(limits, Limits) else parse_limits(limits or {})
    with s.transaction():
        s.durable()  # a definition, its switch and limits outlive a crash once reported saved
        existing = strat_store.load_all(s, name)
        base = existing[0].limits if existing else DEFAULT_LIMITS
        merged = given if isinstance(given, Limits) else dataclasses.replace(base, **given)  # type: ignore[arg-type]
        active = is_active if is_active is not None else bool(existing and existing[0].definition.is_active)
        found = acct_store.find_account(s, account)
        if found is None and not new_account:
            raise InputError(
                f"unknown account {account!r}: create it first with"
                f" `strategy-engine account create {shlex.quote(account)} --cash N`"
            )
        if require_keys:
            check_broker(found[0].broker if found else broker)
        account_id = found[0].id if found else acct_store.ensure_account(s, account, broker)
        if initial_cash is not None:
            acct_store.save_mirror(s, account_id, Account(initial_cash, initial_cash, initial_cash), [])
        sid = strat_store.upsert_definition(
            s, name, strategy_type, cfg.model_dump(mode="json"), is_active=active, account_id=account_id
        )
        strat_store.upsert_limits(s, sid, merged)
    return sid


def limits_doc(limits: Limits) -> dict[str, float | int | None]:
    return {k: getattr(limits, k) for k in LIMIT_NAMES}
