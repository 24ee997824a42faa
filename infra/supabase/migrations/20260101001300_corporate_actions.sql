-- Splits the engine adjusts prices for (optional: an empty table means the break rule alone
-- keeps a split from trading). split_ratio is new shares per old share: 10 for a 10:1 split,
-- 0.1 for a 1:10 reverse split. Prices of bars before the ex date (midnight New York) are
-- divided by it from the ex date on.
create table if not exists public.corporate_actions (
  symbol text not null,
  ex_date date not null,
  split_ratio numeric not null,
  primary key (symbol, ex_date)
);
-- NaN sorts above every number in numeric, so the upper bound also refuses NaN and Infinity.
do $$ begin
  alter table public.corporate_actions add constraint corporate_actions_ratio_sane
    check (split_ratio > 0 and split_ratio <= 1000000);
exception when duplicate_object then null; end $$;

alter table public.corporate_actions enable row level security;
revoke all on table public.corporate_actions from anon, authenticated;
grant select on table public.corporate_actions to authenticated;
grant all on table public.corporate_actions to service_role;
drop policy if exists "dashboard read" on public.corporate_actions;
create policy "dashboard read" on public.corporate_actions for select to authenticated using (true);
