-- Row Level Security. The engine connects as a privileged role (table owner / bypassrls).
-- Dashboards read through `authenticated`; `anon` reads nothing. Grants are explicit because
-- Supabase no longer grants new tables to its API roles by default.

do $$
declare
  t text;
  tables text[] := array[
    'market_data_1m', 'options_flow', 'broker_accounts', 'broker_positions', 'broker_balances',
    'paper_trades', 'strategy_definitions', 'strategy_limits', 'strategy_state', 'strategy_logs',
    'engine_runs', 'backfill_runs'];
begin
  foreach t in array tables loop
    execute format('alter table public.%I enable row level security', t);
    execute format('revoke all on table public.%I from anon, authenticated', t);
    execute format('grant select on table public.%I to authenticated', t);
    execute format('grant all on table public.%I to service_role', t);
    execute format('drop policy if exists "dashboard read" on public.%I', t);
    execute format(
      'create policy "dashboard read" on public.%I for select to authenticated using (true)', t);
  end loop;
end $$;
