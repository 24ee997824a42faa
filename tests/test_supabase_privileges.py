"""Defence in depth under Supabase's default privileges: anon and authenticated hold nothing on
the sequences of the tables the engine created (no `setval`), and the migrations create no
function they could run. A table that existed before keeps its grants (the project's own API).
"""

from __future__ import annotations

import psycopg
import pytest

from strategy_engine.store import Session, connect
from strategy_engine.store.migrations import default_dir, discover, migrate

API_ROLES = ("anon", "authenticated")
# What Supabase's init scripts set for objects the `postgres` role creates in public.
SUPABASE_DEFAULTS = """
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
"""
USER_FUNCTIONS = """
select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'
order by 1
"""


def _engine_sequences(s: Session) -> list[str]:
    rows = s.fetchall(
        """
        select distinct d.objid::regclass::text from pg_depend d join pg_class c on c.oid = d.objid
        where c.relkind = 'S' and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
          and d.refobjid::regclass::text in ('market_data_1m', 'options_flow', 'broker_accounts',
            'broker_positions', 'broker_balances', 'paper_trades', 'strategy_definitions',
            'strategy_limits', 'strategy_state', 'strategy_logs', 'engine_runs', 'backfill_runs')
        order by 1
        """
    )
    return [r[0] for r in rows]


def _setval_as(s: Session, role: str, seq: str) -> None:
    with s.transaction():
        s.execute(f"set local role {role}")
        s.execute("select setval(%s, 1)", (seq,))


def test_api_roles_cannot_touch_engine_sequences_or_run_engine_functions(empty_db_url: str) -> None:
    with connect(empty_db_url) as s:
        roles = discover(default_dir())[0]
        s.execute(roles.path.read_text())  # the API roles exist first, as on Supabase
        s.execute(SUPABASE_DEFAULTS)
        # a table from before the engine, with a serial key granted under those defaults
        s.execute(
            "create table public.market_data_1m (id bigserial primary key, symbol text, ts timestamptz)"
        )
        assert s.fetchone("select has_sequence_privilege('anon', 'market_data_1m_id_seq', 'UPDATE')") == (
            True,
        )
        functions_before = s.fetchall(USER_FUNCTIONS)
        migrate(s)
        assert s.fetchall(USER_FUNCTIONS) == functions_before  # no function to revoke
        seqs = _engine_sequences(s)
        assert seqs == [
            "market_data_1m_id_seq",
            "options_flow_id_seq",
            "paper_trades_id_seq",
            "strategy_logs_id_seq",
        ]
        # the project's table keeps what it had; the engine's own lose everything
        assert s.fetchone("select has_sequence_privilege('anon', 'market_data_1m_id_seq', 'UPDATE')") == (
            True,
        )
        seqs.remove("market_data_1m_id_seq")
        for role in API_ROLES:
            for seq in seqs:
                for priv in ("USAGE", "SELECT", "UPDATE"):
                    got = s.fetchone("select has_sequence_privilege(%s, %s, %s)", (role, seq, priv))
                    assert got == (False,), (role, seq, priv)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    _setval_as(s, role, seq)
        # the project's own defaults are untouched: a sequence made later is granted as before
        s.execute("create sequence public.dashboard_counter")
        assert s.fetchone("select has_sequence_privilege('anon', 'dashboard_counter', 'UPDATE')") == (True,)
