-- Defence in depth: Supabase's default privileges grant anon and authenticated everything on
-- new sequences and functions in `public`, so `setval` on an engine table's id sequence would
-- work for them. They write nothing to the engine's tables: take every privilege on the
-- sequences of the tables the engine created (its mark, see 20260101000400) away. Sequences of
-- tables that existed before keep their grants (the project's API may insert into those).
-- The migrations create no function; a future one must revoke EXECUTE from public, anon and
-- authenticated in the same file (tests/test_supabase_privileges.py checks both).

-- preflight: begin (a copy of infra/supabase/preflight.sql: edit there, then run infra/supabase/sync_preflight.py)
-- A migration waits at most 5 s for a table lock (a dashboard query or a long report holding
-- one): it fails, is rolled back whole, and can be run again, instead of queueing every query of
-- the tick behind it.
set local lock_timeout = '5s';
-- Before anything changes: what the engine could not use safely is refused with one line
-- (SQLSTATE SEM01) that says what to do. Nothing is converted, deleted or guessed on the owner's
-- behalf; after they fix it, the migration runs from the start again.
do $preflight$
declare
  tables constant text[] := array[
    'market_data_1m', 'options_flow', 'broker_accounts', 'broker_positions', 'broker_balances',
    'paper_trades', 'strategy_definitions', 'strategy_limits', 'strategy_state', 'strategy_logs',
    'engine_runs', 'backfill_runs', 'corporate_actions'];
  problems text[] := '{}';
  r record;
  key_type text;
  dup_count bigint;
  dup_example text;
  key_list text;
  not_null text;
  has_rows boolean;
  missing text[];
begin
  -- 0. Each name must be a table: a view (or anything else) in its place is not supported.
  for r in
    select t.tbl, c.relkind,
           case c.relkind when 'v' then 'view' when 'm' then 'materialized view'
             when 'f' then 'foreign table' when 'S' then 'sequence' else 'relation' end as kind
    from unnest(tables) as t(tbl) join pg_class c on c.oid = to_regclass('public.' || t.tbl)
    where c.relkind not in ('r', 'p')
  loop
    problems := problems || format(
      'public.%I is a %s: views and other relations in place of the engine''s tables are not'
      ' supported; rename it (ALTER %s public.%I RENAME TO %I) and run the migration again',
      r.tbl, r.kind, case when r.relkind in ('v', 'm', 'f', 'S') then upper(r.kind) else 'TABLE' end,
      r.tbl, r.tbl || '_old');
  end loop;

  -- 1. Times the engine reads must be timestamptz. A `timestamp` column holds wall-clock values
  --    in a zone only its writer knew; reading it in any zone would make stale bars look fresh.
  for r in
    select w.tbl, w.col, format_type(a.atttypid, a.atttypmod) as typ
    from (values
      ('market_data_1m', 'ts'), ('options_flow', 'ts'),
      ('paper_trades', 'decision_minute'), ('paper_trades', 'submitted_at'), ('paper_trades', 'updated_at'),
      ('broker_positions', 'updated_at'), ('broker_balances', 'updated_at'),
      ('strategy_definitions', 'updated_at'),
      ('strategy_state', 'last_trade_at'), ('strategy_state', 'last_run_minute'),
      ('strategy_state', 'updated_at'),
      ('strategy_logs', 'decision_minute'), ('strategy_logs', 'created_at'),
      ('engine_runs', 'minute'), ('engine_runs', 'started_at'), ('engine_runs', 'finished_at'),
      ('backfill_runs', 'range_start'), ('backfill_runs', 'range_end'), ('backfill_runs', 'created_at'),
      ('backfill_runs', 'finished_at')
    ) as w(tbl, col)
    join pg_attribute a
      on a.attrelid = to_regclass('public.' || w.tbl) and a.attname = w.col and not a.attisdropped
    where a.atttypid <> 'timestamptz'::regtype
  loop
    if r.typ = 'timestamp without time zone' then
      problems := problems || format(
        'public.%I.%I is timestamp without time zone: the engine needs timestamptz and will not guess'
        ' the zone its values were written in. Once you know that zone, run: ALTER TABLE public.%I'
        ' ALTER COLUMN %I TYPE timestamptz USING %I AT TIME ZONE ''<zone, e.g. UTC or America/New_York>'';'
        ' then run the migration again',
        r.tbl, r.col, r.tbl, r.col, r.col);
    else
      problems := problems || format(
        'public.%I.%I is %s: the engine needs timestamptz; convert it (ALTER TABLE public.%I ALTER COLUMN'
        ' %I TYPE timestamptz USING ...) or rename it, then run the migration again',
        r.tbl, r.col, r.typ, r.tbl, r.col);
    end if;
  end loop;

  -- 2. The keys the engine refers to: an existing table keeps its key type (uuid, bigint or
  --    integer) and the engine's references take that type; anything else is refused.
  for r in select v.tbl from (values ('broker_accounts'), ('strategy_definitions')) as v(tbl)
           where to_regclass('public.' || v.tbl) is not null
  loop
    select format_type(a.atttypid, a.atttypmod) into key_type from pg_attribute a
    where a.attrelid = to_regclass('public.' || r.tbl) and a.attname = 'id' and not a.attisdropped;
    if key_type is null then
      problems := problems || format(
        'public.%I has no id column: the engine refers to its rows by id (uuid, bigint or integer);'
        ' add one, e.g. ALTER TABLE public.%I ADD COLUMN id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY',
        r.tbl, r.tbl);
    elsif key_type not in ('uuid', 'bigint', 'integer') then
      problems := problems || format(
        'public.%I.id is %s: the engine refers to rows by a uuid, bigint or integer id', r.tbl, key_type);
    elsif not exists (
      select 1 from pg_index i
      where i.indrelid = to_regclass('public.' || r.tbl) and i.indisunique and i.indisvalid
        and i.indimmediate and i.indpred is null and i.indexprs is null and i.indnkeyatts = 1
        and i.indkey[0] = (select attnum from pg_attribute
                           where attrelid = i.indrelid and attname = 'id' and not attisdropped)
    ) then
      problems := problems || format(
        'public.%I.id is not unique: add a primary key (ALTER TABLE public.%I ADD PRIMARY KEY (id)) so'
        ' that the engine''s tables can refer to it', r.tbl, r.tbl);
    end if;
  end loop;

  -- 3. Existing references must have the type of the key they refer to (else nothing joins).
  for r in
    select w.tbl, w.col, w.ref, format_type(a.atttypid, a.atttypmod) as typ,
           to_regclass('public.' || w.ref) is null and w.ref is not null as ref_missing,
           coalesce((select format_type(k.atttypid, k.atttypmod) from pg_attribute k
                     where k.attrelid = to_regclass('public.' || w.ref) and k.attname = 'id'
                       and not k.attisdropped), 'uuid') as want
    from (values
      ('broker_positions', 'account_id', 'broker_accounts'),
      ('broker_balances', 'account_id', 'broker_accounts'),
      ('paper_trades', 'account_id', 'broker_accounts'),
      ('strategy_definitions', 'account_id', 'broker_accounts'),
      ('paper_trades', 'strategy_id', 'strategy_definitions'),
      ('strategy_limits', 'strategy_id', 'strategy_definitions'),
      ('strategy_state', 'strategy_id', 'strategy_definitions'),
      ('strategy_logs', 'strategy_id', 'strategy_definitions'),
      ('backfill_runs', 'strategy_id', 'strategy_definitions'),
      ('engine_runs', 'id', null), ('backfill_runs', 'id', null),
      ('strategy_logs', 'engine_run_id', null), ('strategy_logs', 'backfill_run_id', null)
    ) as w(tbl, col, ref)
    join pg_attribute a
      on a.attrelid = to_regclass('public.' || w.tbl) and a.attname = w.col and not a.attisdropped
  loop
    if r.typ = r.want then
      continue;
    elsif r.ref_missing then
      problems := problems || format(
        'public.%I.%I is %s but there is no table public.%I: the engine would create it with a uuid id,'
        ' which this column cannot refer to; create public.%I yourself with a %s id (CREATE TABLE public.%I'
        ' (id %s GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text UNIQUE)) or change the column'
        ' to uuid, then run the migration again',
        r.tbl, r.col, r.typ, r.ref, r.ref, r.typ, r.ref, r.typ);
    else
      problems := problems || format(
        'public.%I.%I is %s but %s is %s: the engine cannot join them; change the column to %s'
        ' (ALTER TABLE public.%I ALTER COLUMN %I TYPE %s USING ...) or rename it, then run the migration again',
        r.tbl, r.col, r.typ,
        case when r.ref is null then 'the engine''s run id' else format('public.%I.id', r.ref) end,
        r.want, r.want, r.tbl, r.col, r.want);
    end if;
  end loop;

  -- 4. Keys the engine makes unique: duplicates are reported, never deleted here. A key counts
  --    as present only as a valid, immediate unique index on exactly these columns (any name),
  --    each in its column's own collation: the engine's statements compare in that collation,
  --    and a key in another one (symbol collate "C" on a case-insensitive column) lets two rows
  --    that the engine reads as one symbol share a ts.
  for r in
    select v.tbl, v.cols from (values
      ('market_data_1m', array['symbol', 'ts']),
      ('broker_accounts', array['name']),
      ('broker_positions', array['account_id', 'symbol']),
      ('broker_balances', array['account_id']),
      ('paper_trades', array['client_order_id']),
      ('strategy_definitions', array['name']),
      ('strategy_limits', array['strategy_id']),
      ('strategy_state', array['strategy_id', 'trading_date'])
    ) as v(tbl, cols)
    join pg_class c on c.oid = to_regclass('public.' || v.tbl) and c.relkind in ('r', 'p')
    where (select count(*) from pg_attribute a where a.attrelid = c.oid
           and a.attname = any(v.cols) and not a.attisdropped) = cardinality(v.cols)
      and not exists (
        select 1 from pg_index i
        where i.indrelid = c.oid and i.indisunique and i.indisvalid and i.indimmediate
          and i.indpred is null and i.indexprs is null and i.indnkeyatts = cardinality(v.cols)
          and (select array_agg(a.attname::text order by a.attname) from pg_attribute a
               where a.attrelid = i.indrelid and a.attnum = any(i.indkey[0:i.indnkeyatts - 1]))
              = (select array_agg(k order by k) from unnest(v.cols) k)
          and not exists (select 1 from generate_series(0, i.indnkeyatts - 1) k
                          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[k]
                          where i.indcollation[k] <> a.attcollation))
  loop
    select string_agg(format('%I', c), ', '), string_agg(format('%I is not null', c), ' and ')
      into key_list, not_null from unnest(r.cols) c;
    execute format(
      'select count(*), min(k) from (select row(%s)::text as k from public.%I where %s'
      ' group by %s having count(*) > 1) d',
      key_list, r.tbl, not_null, key_list)
      into dup_count, dup_example;
    if dup_count > 0 then
      problems := problems || format(
        'public.%I has %s duplicated (%s) key(s), e.g. %s; the engine needs them unique and deletes'
        ' nothing itself. Inspect them with: SELECT %s, count(*) FROM public.%I GROUP BY %s HAVING'
        ' count(*) > 1; keep one row per key, then run the migration again',
        r.tbl, dup_count, key_list, dup_example, key_list, r.tbl, key_list);
    end if;
  end loop;

  -- 4a. A deferrable unique key on exactly a key's columns: the engine upserts with
  --     ON CONFLICT on those columns, and PostgreSQL then takes every unique index on them as an
  --     arbiter and refuses a deferrable one ("ON CONFLICT does not support deferrable unique
  --     constraints"), so every write of the engine's to the table would fail.
  for r in
    select v.tbl, v.cols, x.relname::text as idx, con.conname::text as con
    from (values
      ('broker_accounts', array['name']),
      ('broker_positions', array['account_id', 'symbol']),
      ('broker_balances', array['account_id']),
      ('paper_trades', array['client_order_id']),
      ('strategy_definitions', array['name']),
      ('strategy_limits', array['strategy_id']),
      ('strategy_state', array['strategy_id', 'trading_date'])
    ) as v(tbl, cols)
    join pg_index i on i.indrelid = to_regclass('public.' || v.tbl)
    join pg_class x on x.oid = i.indexrelid
    left join pg_constraint con on con.conindid = i.indexrelid and con.conrelid = i.indrelid
    where i.indisunique and not i.indimmediate and i.indpred is null and i.indexprs is null
      and i.indnkeyatts = cardinality(v.cols)
      and (select array_agg(a.attname::text order by a.attname) from pg_attribute a
           where a.attrelid = i.indrelid and a.attnum = any(i.indkey[0:i.indnkeyatts - 1]))
          = (select array_agg(k order by k) from unnest(v.cols) k)
  loop
    problems := problems || format(
      'public.%I has a deferrable unique key %I on (%s): the engine''s upserts (ON CONFLICT) cannot'
      ' use a table with one; make it immediate (ALTER TABLE public.%I DROP CONSTRAINT %I, ADD CONSTRAINT'
      ' %I UNIQUE (%s)), then run the migration again',
      r.tbl, coalesce(r.con, r.idx), array_to_string(r.cols, ', '), r.tbl, coalesce(r.con, r.idx),
      coalesce(r.con, r.idx), array_to_string(r.cols, ', '));
  end loop;

  -- 4b. A table of the engine's with tables inheriting from it (INHERITS, old-style
  --     partitioning): the engine's statements read their rows too, and its keys do not cover
  --     them. (Declarative partitions are in pg_inherits too: a partitioned table's keys cover
  --     its partitions, so those are left alone.)
  for r in
    select c.relname::text as tbl, string_agg(format('%s', k.oid::regclass), ', ') as children
    from unnest(tables) t
    join pg_class c on c.oid = to_regclass('public.' || t) and c.relkind = 'r'
    join pg_inherits h on h.inhparent = c.oid
    join pg_class k on k.oid = h.inhrelid
    group by c.relname
  loop
    problems := problems || format(
      'public.%I has tables inheriting from it (%s): the engine reads their rows with it, and its'
      ' keys do not cover them; move their rows into public.%I (or elsewhere) and detach them'
      ' (ALTER TABLE <child> NO INHERIT public.%I), then run the migration again',
      r.tbl, r.children, r.tbl, r.tbl);
  end loop;

  -- 5. The tables the engine inserts into, and the columns it writes (store/*.py). Any other
  --    column must fill itself (a default, identity or generated) or accept NULL, and the
  --    columns it may leave NULL must accept NULL. CHECK constraints and triggers of the
  --    owner's are not inspected: they are the owner's to keep compatible.
  for r in
    select w.tbl, a.attname::text as col, format_type(a.atttypid, a.atttypmod) as typ,
           a.attname = any(w.writes) as written
    from (values
      ('market_data_1m', array['symbol', 'ts', 'open', 'high', 'low', 'close', 'volume'], array[]::text[]),
      ('options_flow', array['ts', 'underlying', 'option_type', 'side', 'size', 'trade_price', 'notional'],
       array['notional']),
      ('broker_accounts', array['name', 'broker', 'is_paper'], array[]::text[]),
      ('broker_balances', array['account_id', 'cash', 'buying_power', 'equity', 'updated_at'], array[]::text[]),
      ('broker_positions', array['account_id', 'symbol', 'qty', 'avg_entry_price', 'updated_at'],
       array['avg_entry_price']),
      ('paper_trades', array['strategy_id', 'account_id', 'source', 'decision_minute', 'client_order_id',
        'broker_order_id', 'symbol', 'side', 'qty', 'status', 'filled_qty', 'filled_avg_price',
        'submitted_at', 'error', 'updated_at'],
       array['strategy_id', 'broker_order_id', 'filled_avg_price', 'submitted_at', 'error']),
      ('strategy_definitions', array['name', 'strategy_type', 'is_active', 'config', 'account_id'],
       array[]::text[]),
      ('strategy_limits', array['strategy_id', 'max_daily_trades', 'max_position_size',
        'max_notional_per_trade', 'max_notional_per_day', 'max_open_positions', 'cool_down_minutes'],
       array['max_daily_trades', 'max_position_size', 'max_notional_per_trade', 'max_notional_per_day',
        'max_open_positions', 'cool_down_minutes']),
      ('strategy_state', array['strategy_id', 'trading_date'], array[]::text[]),
      ('strategy_logs', array['engine_run_id', 'backfill_run_id', 'run_mode', 'strategy_id',
        'decision_minute', 'symbol', 'action', 'qty', 'reason', 'risk_code', 'outcome', 'client_order_id',
        'signal_payload'],
       array['engine_run_id', 'backfill_run_id', 'risk_code', 'client_order_id']),
      ('engine_runs', array['id', 'trigger', 'minute', 'status'], array[]::text[]),
      ('backfill_runs', array['id', 'strategy_id', 'strategy_name', 'range_start', 'range_end',
        'parameters', 'config_hash', 'summary', 'status', 'finished_at'], array['strategy_id'])
    ) as w(tbl, writes, nullable)
    join pg_class c on c.oid = to_regclass('public.' || w.tbl) and c.relkind in ('r', 'p')
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    where (not a.attname = any(w.writes) and a.attidentity = '' and a.attgenerated = ''
           and not a.atthasdef and (a.attnotnull or a.attname = 'id'))
       or (a.attname = any(w.nullable) and a.attnotnull)
  loop
    if r.written then
      problems := problems || format(
        'public.%I.%I is NOT NULL but the engine may leave it empty: drop the constraint (ALTER TABLE'
        ' public.%I ALTER COLUMN %I DROP NOT NULL), then run the migration again',
        r.tbl, r.col, r.tbl, r.col);
    elsif r.col = 'id' then
      problems := problems || format(
        'public.%I.id (%s) has no default and the engine inserts rows without one: %s, then run the'
        ' migration again', r.tbl, r.typ,
        case when r.typ = 'uuid'
          then format('ALTER TABLE public.%I ALTER COLUMN id SET DEFAULT gen_random_uuid()', r.tbl)
          when r.typ in ('bigint', 'integer', 'smallint')
          then format('ALTER TABLE public.%I ALTER COLUMN id SET NOT NULL, ALTER COLUMN id ADD GENERATED BY'
            ' DEFAULT AS IDENTITY; SELECT setval(pg_get_serial_sequence(''public.%I'', ''id''),'
            ' (SELECT max(id) FROM public.%I))', r.tbl, r.tbl, r.tbl)
          else 'give it a default' end);
    else
      problems := problems || format(
        'public.%I.%I (%s) is NOT NULL without a default and the engine does not write it: give it a'
        ' default (ALTER TABLE public.%I ALTER COLUMN %I SET DEFAULT ...) or drop NOT NULL, then run the'
        ' migration again', r.tbl, r.col, r.typ, r.tbl, r.col);
    end if;
  end loop;

  -- 6. Columns the engine writes labels into: text, varchar long enough, or an enum that has
  --    every label (the engine casts through the column's own type, so any of these works).
  for r in
    select w.tbl, w.col, w.labels, t.typtype, format_type(a.atttypid, a.atttypmod) as typ,
           coalesce(nullif(t.typbasetype, 0), t.oid) as base,
           case when t.typtype = 'd' then t.typtypmod else a.atttypmod end as typmod,
           array(select l from unnest(w.labels) l
                 where not exists (select 1 from pg_enum e where e.enumtypid = a.atttypid
                                   and e.enumlabel = l)) as absent
    from (values
      ('paper_trades', 'side', array['buy', 'sell']),
      ('paper_trades', 'source', array['strategy', 'manual']),
      ('paper_trades', 'status', array['new', 'partially_filled', 'filled', 'done_for_day', 'canceled',
        'expired', 'replaced', 'pending_cancel', 'pending_replace', 'pending_review', 'accepted',
        'pending_new', 'accepted_for_bidding', 'stopped', 'rejected', 'suspended', 'calculated', 'held',
        'intent', 'void']),
      ('strategy_logs', 'run_mode', array['live', 'backfill']),
      ('strategy_logs', 'action', array['buy', 'sell', 'hold']),
      ('strategy_logs', 'outcome', array['held', 'blocked', 'ordered', 'failed', 'reconciled'])
    ) as w(tbl, col, labels)
    join pg_class c on c.oid = to_regclass('public.' || w.tbl) and c.relkind in ('r', 'p')
    join pg_attribute a on a.attrelid = c.oid and a.attname = w.col and not a.attisdropped
    join pg_type t on t.oid = a.atttypid
  loop
    if r.typtype = 'e' then
      if cardinality(r.absent) > 0 then
        problems := problems || format(
          'public.%I.%I is the enum %s without the label(s) %s that the engine writes: add them (%s),'
          ' then run the migration again',
          r.tbl, r.col, r.typ, array_to_string(r.absent, ', '),
          (select string_agg(format('ALTER TYPE %s ADD VALUE IF NOT EXISTS %L;', r.typ, l), ' ')
           from unnest(r.absent) l));
      end if;
    elsif r.base = 'varchar'::regtype and r.typmod > 0
          and r.typmod - 4 < (select max(length(l)) from unnest(r.labels) l) then
      problems := problems || format(
        'public.%I.%I is %s, too short for the label %L that the engine writes: widen it (ALTER TABLE'
        ' public.%I ALTER COLUMN %I TYPE text), then run the migration again',
        r.tbl, r.col, r.typ,
        (select l from unnest(r.labels) l order by length(l) desc limit 1), r.tbl, r.col);
    elsif r.base not in ('text'::regtype, 'varchar'::regtype) then
      problems := problems || format(
        'public.%I.%I is %s: the engine writes the labels %s there and needs text, varchar or an enum'
        ' with those labels; convert it or rename it, then run the migration again',
        r.tbl, r.col, r.typ, array_to_string(r.labels, ', '));
    end if;
  end loop;

  -- 7. A table with rows must already have the columns the engine reads from them: columns added
  --    now would be empty, and empty prices or flow would be read as no market at all.
  for r in
    select v.tbl, v.cols, v.alternatives from (values
      ('market_data_1m', array['symbol', 'ts', 'close'], array[]::text[]),
      ('options_flow', array['ts', 'underlying', 'option_type', 'side'], array['size', 'trade_price']),
      ('corporate_actions', array['symbol', 'ex_date', 'split_ratio'], array[]::text[])
    ) as v(tbl, cols, alternatives)
    join pg_class c on c.oid = to_regclass('public.' || v.tbl) and c.relkind in ('r', 'p')
  loop
    execute format('select exists (select 1 from public.%I)', r.tbl) into has_rows;
    continue when not has_rows;
    -- options_flow: the premium is notional, or else size x trade_price x 100
    missing := array(
      select col from unnest(r.cols || case
        when exists (select 1 from pg_attribute a where a.attrelid = to_regclass('public.' || r.tbl)
                     and a.attname = 'notional' and not a.attisdropped) then array[]::text[]
        else r.alternatives end) col
      where not exists (select 1 from pg_attribute a where a.attrelid = to_regclass('public.' || r.tbl)
                        and a.attname = col and not a.attisdropped));
    if cardinality(missing) > 0 then
      problems := problems || format(
        'public.%I has rows but no %s column(s), which the engine reads%s: add them with the values your'
        ' data has (ALTER TABLE public.%I ADD COLUMN ... or rename the column that holds them), then run'
        ' the migration again; the engine does not add them empty to a table with rows',
        r.tbl, array_to_string(missing, ', '),
        case when r.tbl = 'options_flow' then ' (the premium is notional, or else size x trade_price x 100;'
          ' a feed without sides can use: ADD COLUMN side text NOT NULL DEFAULT ''unknown'')' else '' end,
        r.tbl);
    end if;
  end loop;

  if cardinality(problems) > 0 then
    raise exception using errcode = 'SEM01', message = problems[1] || case
      when cardinality(problems) > 1
        then format(' (%s more problem(s) found, reported one at a time)', cardinality(problems) - 1)
      else '' end;
  end if;

  -- Which of the engine's tables exist before this file: those it creates now get the engine's
  -- mark at the end of the file; the others' security (RLS, policies, grants) is left alone.
  perform set_config('agenttrader.tables_before', 'checked:' ||
    coalesce((select string_agg(t, ',') from unnest(tables) t where to_regclass('public.' || t) is not null), ''),
    true);
end
$preflight$;
-- preflight: end

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
          'engine_runs', 'backfill_runs']) as t
        where obj_description(to_regclass('public.' || t), 'pg_class') = 'agenttrader-engine')
  loop
    execute format('revoke all on sequence %s from anon, authenticated', seq);
  end loop;
end
$$;
