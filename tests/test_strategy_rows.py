"""`strategies.load_all`: each column of a definition, its account and its limits lands in its own
field (store/strategies.py `_row`). Every strategy here differs from the other in every limit,
account field and config, so a column read from its neighbour, or dropped, shows."""

from __future__ import annotations

from typing import Any

import pytest

from strategy_engine.core.errors import InputError
from strategy_engine.core.models import BrokerAccount, Limits, StrategyDef
from strategy_engine.store import Session
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store

ALPHA_CONFIG: dict[str, Any] = {"symbols": ["SPY", "QQQ"], "order_qty": 3}
BETA_CONFIG: dict[str, Any] = {"symbols": ["IWM"], "min_flow_premium": 75_000}
ALPHA_LIMITS = Limits(
    max_daily_trades=1,
    max_position_size=2.5,
    max_notional_per_trade=30,
    max_notional_per_day=400,
    max_open_positions=5,
    cool_down_minutes=60,
)
BETA_LIMITS = Limits(
    max_daily_trades=7,
    max_position_size=8.5,
    max_notional_per_trade=90,
    max_notional_per_day=1000,
    max_open_positions=11,
    cool_down_minutes=12,
)


def test_each_column_of_a_strategy_its_account_and_its_limits_is_read_into_its_own_field(
    session: Session,
) -> None:
    with session.transaction():
        desk_one = acct_store.ensure_account(session, "desk-one", "simulated")
        desk_two = acct_store.ensure_account(session, "desk-two", "alpaca")
        session.execute("update broker_accounts set credentials_ref = 'SECOND' where id = %s", (desk_two,))
        alpha = strat_store.upsert_definition(
            session, "alpha", "naive_flow_trend", ALPHA_CONFIG, is_active=True, account_id=desk_two
        )
        beta = strat_store.upsert_definition(
            session, "beta", "naive_flow_trend", BETA_CONFIG, is_active=False, account_id=desk_one
        )
        gamma = strat_store.upsert_definition(
            session, "gamma", "naive_flow_trend", {}, is_active=True, account_id=None
        )
        strat_store.upsert_limits(session, alpha, ALPHA_LIMITS)
        strat_store.upsert_limits(session, beta, BETA_LIMITS)
    alpha_row = strat_store.StrategyRow(
        StrategyDef(alpha, "alpha", "naive_flow_trend", True, ALPHA_CONFIG),
        BrokerAccount(desk_two, "desk-two", "alpaca", "SECOND"),
        True,
        ALPHA_LIMITS,
    )
    beta_row = strat_store.StrategyRow(
        StrategyDef(beta, "beta", "naive_flow_trend", False, BETA_CONFIG),
        BrokerAccount(desk_one, "desk-one", "simulated", None),
        True,
        BETA_LIMITS,
    )
    # no account (its minute fails alone in planning) and no limits row: every limit None
    gamma_row = strat_store.StrategyRow(
        StrategyDef(gamma, "gamma", "naive_flow_trend", True, {}), None, True, Limits()
    )
    assert strat_store.load_all(session) == [alpha_row, beta_row, gamma_row]
    assert strat_store.load_all(session, "beta") == [beta_row]
    assert strat_store.load_all(session, "delta") == []


def test_a_name_with_a_control_character_is_refused_before_sql(session: Session) -> None:
    with pytest.raises(InputError) as refused:
        strat_store.load_all(session, "alpha\x07")
    assert str(refused.value) == "strategy name: control character U+0007 not allowed"


def test_a_write_an_owners_trigger_skips_is_an_error_not_a_missing_id(session: Session) -> None:
    """RETURNING yields no row when a BEFORE trigger of the owner's returns NULL (the preflight
    leaves triggers to the owner): the upsert says so instead of handing back no id."""
    session.execute(
        "create function public.skip_row() returns trigger language plpgsql as $$ begin return null; end $$;"
        "create trigger skip_all before insert or update on public.strategy_definitions"
        " for each row execute function public.skip_row()"
    )
    with pytest.raises(RuntimeError) as refused:
        strat_store.upsert_definition(
            session, "alpha", "naive_flow_trend", {}, is_active=True, account_id=None
        )
    assert str(refused.value) == "upsert returned no row"
    assert session.fetchone("select count(*) from public.strategy_definitions") == (0,)
