-- Supabase Cron: the engine's tick driven from inside the database (pg_cron + pg_net), for
-- deployments that use it instead of Cloud Scheduler or EventBridge Scheduler. Running both is
-- harmless (the engine claims each (strategy, minute) once) but wasteful.
--
-- The target URL and the bearer secret are read from Vault at every run, so nothing secret is
-- in this file, in cron.job, or in git, and rotating either is one vault.update_secret().
-- pg_net cannot mint a Google OIDC token or an AWS SigV4 signature: the target must be an
-- entry point that checks ENGINE_HTTP_SECRET (on Google Cloud, list "tick" in the Terraform
-- variable public_entry_points).
--
-- Once, in the SQL editor (never in a file):
--   select vault.create_secret('<tick function URL>', 'engine_tick_url');
--   select vault.create_secret('<ENGINE_HTTP_SECRET>', 'engine_http_secret');
-- Then, any number of times (cron.schedule with an existing name replaces that job):
--   psql "$SUPABASE_DB_URL" -v ON_ERROR_STOP=1 -f infra/supabase/cron.sql
--   (or ./deploy.sh --supabase-cron)
--
-- Kill switch on this path (the strategies' is_active flag is the finer one):
--   select cron.alter_job(jobid, active := false) from cron.job where jobname = 'strategy-engine-tick';
-- Remove it (unschedule by id: unschedule by a missing name raises):
--   select cron.unschedule(jobid) from cron.job where jobname = 'strategy-engine-tick';

create extension if not exists pg_cron with schema pg_catalog;
create extension if not exists pg_net with schema extensions;

-- Refuse to schedule a job that would post to nowhere every minute.
do $$
declare
  missing text;
begin
  select string_agg(wanted, ', ') into missing
  from unnest(array['engine_tick_url', 'engine_http_secret']) as wanted
  where not exists (select 1 from vault.secrets s where s.name = wanted);
  if missing is not null then
    raise exception 'Vault secret(s) missing: %. Create them first: select vault.create_secret(''<value>'', ''<name>'');', missing;
  end if;
end
$$;

-- pg_cron runs in UTC. 13:00-20:59 UTC on weekdays covers the NYSE session (09:30-16:00 New
-- York) in both EDT and EST; the engine's calendar records the minutes outside it, holidays and
-- half days as market_closed. The minute T is sent explicitly: a late run still ticks the minute
-- it was scheduled for, as the other schedulers do.
select cron.schedule(
  'strategy-engine-tick',
  '* 13-20 * * 1-5',
  $job$
  select net.http_post(
    url := (select decrypted_secret from vault.decrypted_secrets where name = 'engine_tick_url'),
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets where name = 'engine_http_secret')
    ),
    body := jsonb_build_object(
      'minute', to_char(date_trunc('minute', now()) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
    ),
    timeout_milliseconds := 55000
  ) as request_id;
  $job$
);

-- cron.job_run_details is never purged by pg_cron; keep a week of this engine's runs.
select cron.schedule(
  'strategy-engine-cron-cleanup',
  '17 3 * * *',
  $job$
  delete from cron.job_run_details
  where end_time < now() - interval '7 days'
    and jobid in (select jobid from cron.job where jobname like 'strategy-engine-%');
  $job$
);
