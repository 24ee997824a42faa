-- Splits: a ratio within sane bounds, and each split applied once to the simulated positions.
--
-- split_ratio between 1e-6 and 1e6 (a 1:1,000,000 reverse split to a 1,000,000:1 split): a
-- ratio outside, 0 included (a division by zero) or a denormal like 1e-320 (whose float8 is 0
-- or infinite adjusted prices), is a feed error. NaN sorts above every number in numeric, so the
-- upper bound also refuses NaN and Infinity. Rows already outside are refused (SEM01), not
-- deleted: the owner decides what the right ratio was.
do $preflight$
declare
  bad record;
begin
  select symbol, ex_date, split_ratio into bad from public.corporate_actions
  where not (split_ratio >= 0.000001 and split_ratio <= 1000000) limit 1;
  if found then
    raise exception using errcode = 'SEM01', message = format(
      'corporate_actions (%s, %s) has split_ratio %s outside [1e-6, 1e6]: fix or delete the row,'
      ' then migrate again', bad.symbol, bad.ex_date, bad.split_ratio);
  end if;
end $preflight$;

alter table public.corporate_actions drop constraint if exists corporate_actions_ratio_sane;
alter table public.corporate_actions add constraint corporate_actions_ratio_sane
  check (split_ratio >= 0.000001 and split_ratio <= 1000000);

-- The New York date through which splits are reflected in qty and avg_entry_price: a split of
-- ex date D is applied (qty * r, avg_entry_price / r) by the first tick with D > this date and
-- D <= its own date, which then sets this date, so a retry or another strategy on the same
-- account never applies it twice. A position opened on date D already trades at post-split
-- prices of every split up to D. Rows that exist before this migration count as up to date.
alter table public.broker_positions add column if not exists split_applied_through date;
update public.broker_positions
  set split_applied_through = (now() at time zone 'America/New_York')::date
  where split_applied_through is null;
