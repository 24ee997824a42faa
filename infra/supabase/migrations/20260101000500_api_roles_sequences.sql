-- Defence in depth: Supabase's default privileges grant anon and authenticated everything on
-- new sequences and functions in `public`, so `setval` on an engine table's id sequence would
-- work for them. They write nothing here: take every privilege on the engine tables' sequences
-- away (owned identity/serial sequences, including those of tables that existed before us).
-- The migrations create no function; a future one must revoke EXECUTE from public, anon and
-- authenticated in the same file (tests/test_supabase_privileges.py checks both).
do $$
declare
  seq regclass;
begin
  for seq in
    select distinct d.objid::regclass
    from pg_depend d
    join pg_class c on c.oid = d.objid and c.relkind = 'S'
    where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass
      and d.deptype in ('a', 'i')
      and d.refobjid in (
        select to_regclass('public.' || t) from unnest(array[
          'market_data_1m', 'options_flow', 'broker_accounts', 'broker_positions', 'broker_balances',
          'paper_trades', 'strategy_definitions', 'strategy_limits', 'strategy_state', 'strategy_logs',
          'engine_runs', 'backfill_runs']) as t)
  loop
    execute format('revoke all on sequence %s from anon, authenticated', seq);
  end loop;
end
$$;
