"""infra/supabase/cron.sql on real pg_cron (Debian's postgresql-15-cron, preloaded by tests/pg15.py).

Stand-ins, for what Debian does not package: `net.http_post` with pg_net's signature records each
call (the file's `create extension pg_net` line is the only one skipped), and Supabase Vault is
imitated by a `vault.secrets` table and a `vault.decrypted_secrets` view with the columns the file
reads. pg_cron itself is real: it parses the schedule, stores the job and runs its scheduler.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO

CRON_SQL = REPO / "infra" / "supabase" / "cron.sql"
STANDINS = """
create schema net;
create table net.calls (pid int, url text, body jsonb, params jsonb, headers jsonb, timeout_milliseconds int);
create function net.http_post(url text, body jsonb default '{}'::jsonb, params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb, timeout_milliseconds integer default 5000)
returns bigint language sql as $$
  insert into net.calls values (pg_backend_pid(), url, body, params, headers, timeout_milliseconds);
  select 1::bigint $$;
create schema vault;
create table vault.secrets (id uuid primary key default gen_random_uuid(), name text unique, secret text);
create view vault.decrypted_secrets as select id, name, secret as decrypted_secret from vault.secrets;
"""
URL, BEARER = "https://tick.example.test/tick", "vault-held-value-123"


def cron_sql() -> str:
    text = CRON_SQL.read_text()
    pg_net = re.compile(r"^create extension if not exists pg_net .*$", re.M)
    assert len(pg_net.findall(text)) == 1
    return pg_net.sub("", text)


@pytest.fixture
def cron_db(pg15_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """The PostgreSQL 15 server's `postgres` database (pg_cron's cron.database_name)."""
    with psycopg.connect(pg15_url, autocommit=True) as conn:
        conn.execute(STANDINS)
        try:
            yield conn
        finally:
            conn.execute("drop extension if exists pg_cron; drop schema net, vault cascade")


def test_cron_sql_refuses_without_the_vault_secrets(cron_db: psycopg.Connection[tuple[Any, ...]]) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="engine_tick_url, engine_http_secret"):
        cron_db.execute(cron_sql())


def test_real_pg_cron_schedules_the_tick_whose_command_posts_the_minute_with_the_vault_bearer(
    cron_db: psycopg.Connection[tuple[Any, ...]],
) -> None:
    cron_db.execute(
        "insert into vault.secrets (name, secret) values ('engine_tick_url', %s), ('engine_http_secret', %s)",
        (URL, BEARER),
    )
    cron_db.execute(cron_sql())
    cron_db.execute(cron_sql())  # re-runnable: scheduling an existing name replaces that job
    version = cron_db.execute("select extversion from pg_extension where extname = 'pg_cron'").fetchone()
    # any release that has named jobs and run details (1.4, Debian bookworm's "1.4-1", or later)
    release = re.match(r"(\d+)\.(\d+)", version[0]) if version else None
    assert release is not None and (int(release[1]), int(release[2])) >= (1, 4), version
    launcher = cron_db.execute(
        "select count(*) from pg_stat_activity where backend_type = 'pg_cron launcher'"
    )
    assert launcher.fetchone() == (1,)  # the real scheduler runs in this server
    jobs = cron_db.execute(
        "select jobname, schedule, database, username, active from cron.job order by jobname"
    ).fetchall()
    assert jobs == [
        ("strategy-engine-cron-cleanup", "17 3 * * *", "postgres", "postgres", True),
        ("strategy-engine-tick", "* 13-20 * * 1-5", "postgres", "postgres", True),
    ]
    row = cron_db.execute("select command from cron.job where jobname = 'strategy-engine-tick'").fetchone()
    assert row is not None
    command = row[0]
    assert URL not in command and BEARER not in command  # read from Vault at every run

    with cron_db.transaction():  # what pg_cron runs each minute, in one transaction of its own
        started = cron_db.execute("select now()").fetchone()
        cron_db.execute(command)
        calls = cron_db.execute(
            "select url, body, params, headers, timeout_milliseconds from net.calls where pid = pg_backend_pid()"
        ).fetchall()
    assert started is not None
    minute = started[0].astimezone(UTC).replace(second=0, microsecond=0)
    assert calls == [
        (
            URL,
            {"minute": minute.strftime("%Y-%m-%dT%H:%M:%SZ")},
            {},
            {"Content-Type": "application/json", "Authorization": f"Bearer {BEARER}"},
            55000,
        )
    ]
    assert datetime.fromisoformat(calls[0][1]["minute"]) == minute

    cleanup = cron_db.execute("select command from cron.job where jobname = 'strategy-engine-cron-cleanup'")
    cleanup_row = cleanup.fetchone()
    assert cleanup_row is not None
    cron_db.execute(cleanup_row[0])
