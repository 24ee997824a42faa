-- Write-ahead order intents (issue 12). Before an order is sent to a real broker, its row is
-- committed in `paper_trades` with status 'intent' in a transaction of its own; the minute's
-- transaction later overwrites it with what the broker answered. A row still 'intent' at the
-- start of a later run belongs to a minute that never completed: reconciliation looks the order
-- up at the broker by client id, records what the broker holds, and logs the decision as
-- 'reconciled' (or sets 'void' when the order never reached the broker).
alter table public.paper_trades add column if not exists decision_price numeric;
create index if not exists paper_trades_pending_idx
  on public.paper_trades (account_id, status)
  where status not in ('filled', 'canceled', 'expired', 'rejected', 'replaced', 'void');

alter table public.strategy_logs drop constraint if exists strategy_logs_outcome_check;
alter table public.strategy_logs add constraint strategy_logs_outcome_check
  check (outcome in ('held', 'blocked', 'ordered', 'failed', 'reconciled')) not valid;
