-- One Alpaca account per credential (issue 17). Each Alpaca broker_accounts row names the
-- credentials it trades with (credentials_ref: a setting/secret NAME, never the secret; NULL =
-- the default ALPACA_API_KEY / ALPACA_SECRET_KEY) and records the Alpaca account those reach
-- (alpaca_account_number, from GET /v2/account on first use). The unique index makes a second
-- row that reaches an Alpaca account already in use impossible to record: the engine refuses it.

alter table public.broker_accounts add column if not exists credentials_ref text;
alter table public.broker_accounts add column if not exists alpaca_account_number text;
do $$ begin
  alter table public.broker_accounts add constraint broker_accounts_credentials_ref_name
    check (credentials_ref ~ '^[A-Z][A-Z0-9_]{0,39}$') not valid;
exception when duplicate_object then null; end $$;
create unique index if not exists broker_accounts_alpaca_account_number_key
  on public.broker_accounts (alpaca_account_number);
