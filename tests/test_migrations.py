"""Migrations on an empty database, on a legacy AgentTrader database, and the RLS they set up."""

from __future__ import annotations

import psycopg
import pytest

from strategy_engine.store import Session, connect
from strategy_engine.store.migrations import applied_versions, default_dir, discover, migrate

ENGINE_TABLES = (
    "strategy_definitions",
    "strategy_limits",
    "strategy_state",
    "strategy_logs",
    "engine_runs",
    "backfill_runs",
    "broker_accounts",
    "broker_positions",
    "broker_balances",
    "paper_trades",
    "market_data_1m",
    "options_flow",
    "corporate_actions",
)

LEGACY_SCHEMA = """
create table public.market_data_1m (
  id bigserial primary key, symbol text not null, ts timestamptz not null,
  open numeric, high numeric, low numeric, close numeric, volume bigint, vwap numeric, source text
);
create table public.options_flow (
  id uuid primary key default gen_random_uuid(), ts timestamptz not null, underlying text not null,
  option_type text not null, side text, size integer, trade_price numeric, notional numeric,
  strike numeric, expiry date, raw jsonb
);
create table public.broker_accounts (
  id uuid primary key default gen_random_uuid(), name text not null unique, owner_email text
);
create table public.broker_positions (
  account_id uuid references public.broker_accounts(id), symbol text, qty numeric, market_value numeric
);
create table public.broker_balances (account_id uuid, cash numeric not null, currency text default 'USD');
create table public.paper_trades (
  id bigserial primary key, symbol text not null, side text not null, qty numeric not null,
  status text, created_at timestamptz default now(), note text
);
insert into public.market_data_1m (symbol, ts, open, high, low, close, volume, vwap, source)
  values ('SPY', '2025-06-13 13:30+00', 1, 2, 0.5, 1.5, 100, 1.4, 'legacy-feed'),
         ('SPY', '2025-06-13 13:31+00', 1.5, 2, 1, 1.7, 120, 1.6, 'legacy-feed');
insert into public.options_flow (ts, underlying, option_type, side, size, trade_price, strike, raw)
  values ('2025-06-13 13:30:10+00', 'SPY', 'call', 'buy', 10, 2.5, 520, '{"x": 1}');
insert into public.broker_accounts (id, name, owner_email)
  values ('00000000-0000-0000-0000-000000000001', 'legacy', 'ops@example.com');
insert into public.broker_positions (account_id, symbol, qty, market_value)
  values ('00000000-0000-0000-0000-000000000001', 'SPY', 3, 1560);
insert into public.broker_balances (account_id, cash) values ('00000000-0000-0000-0000-000000000001', 5000);
insert into public.paper_trades (symbol, side, qty, status, note) values ('SPY', 'buy', 3, 'filled', 'by hand');
"""


def _snapshot(s: Session) -> dict[str, list[tuple[object, ...]]]:
    return {
        "market_data_1m": s.fetchall(
            "select id, symbol, ts, close, vwap, source from market_data_1m order by id"
        ),
        "options_flow": s.fetchall("select id, underlying, strike, expiry, raw::text from options_flow"),
        "broker_accounts": s.fetchall("select id, name, owner_email from broker_accounts"),
        "broker_positions": s.fetchall("select account_id, symbol, qty, market_value from broker_positions"),
        "broker_balances": s.fetchall("select account_id, cash, currency from broker_balances"),
        "paper_trades": s.fetchall(
            "select id, symbol, side, qty, status, created_at, note from paper_trades"
        ),
    }


def test_migrations_are_named_for_the_supabase_cli() -> None:
    found = discover(default_dir())
    assert len(found) >= 5
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert all(len(m.version) == 14 for m in found)


def test_empty_database_migrates_once_then_is_up_to_date(empty_db_url: str) -> None:
    with connect(empty_db_url) as s:
        first = migrate(s)
        second = migrate(s)
        assert first == [m.version for m in discover(default_dir())]
        assert second == []
        assert applied_versions(s) == set(first)
        for table in ENGINE_TABLES:
            assert s.fetchone("select to_regclass(%s)", (f"public.{table}",)) != (None,), table


def test_legacy_database_keeps_every_row_and_column(empty_db_url: str) -> None:
    with connect(empty_db_url) as s:
        s.execute(LEGACY_SCHEMA)
        before = _snapshot(s)
        migrate(s)
        migrate(s)
        assert _snapshot(s) == before
        cols = {
            r[0]
            for r in s.fetchall(
                "select column_name from information_schema.columns where table_name = 'paper_trades'"
            )
        }
        assert {"note", "created_at", "client_order_id", "strategy_id", "source", "decision_minute"} <= cols
        # the legacy account is usable by the engine: paper by default, a balance row per account
        assert s.fetchone("select is_paper, broker from broker_accounts where name = 'legacy'") == (
            True,
            "simulated",
        )


def test_paper_only_constraint_refuses_a_live_account(session: Session) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        session.execute("insert into broker_accounts (name, broker, is_paper) values ('x', 'alpaca', false)")


def _as_role(s: Session, role: str, query: str) -> list[tuple[object, ...]]:
    with s.transaction():
        s.execute(f"set local role {role}")
        return s.fetchall(query)


@pytest.mark.parametrize("table", ENGINE_TABLES)
def test_anon_reads_nothing_and_authenticated_reads_but_cannot_write(session: Session, table: str) -> None:
    assert session.fetchone(
        "select relrowsecurity from pg_class where oid = %s::regclass", (f"public.{table}",)
    ) == (True,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_role(session, "anon", f"select * from public.{table}")
    _as_role(session, "authenticated", f"select * from public.{table} limit 1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_role(session, "authenticated", f"delete from public.{table}")


def test_authenticated_sees_rows_through_the_read_policy(session: Session) -> None:
    session.execute("insert into broker_accounts (name) values ('visible')")
    # a non-owner, non-bypassrls role is subject to RLS: the policy is what lets it read
    rows = _as_role(session, "authenticated", "select name from broker_accounts")
    assert rows == [("visible",)]
