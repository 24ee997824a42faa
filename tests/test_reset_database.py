"""`reset_database`: the demo's clean start and the tests' migrated template, on a real server."""

from __future__ import annotations

import uuid

import psycopg

from strategy_engine.store import Session, connect, embedded
from strategy_engine.store.journal import reset_database


def _tables(s: Session) -> list[str]:
    return [
        r[0] for r in s.fetchall("select tablename from pg_tables where schemaname = 'public' order by 1")
    ]


def test_reset_drops_a_database_in_use_and_creates_it_empty_or_as_a_copy_of_the_template(
    pg_base_url: str,
) -> None:
    tag = uuid.uuid4().hex[:8]
    template, target = f"Reset-Tmpl-{tag}", f"Reset-Db-{tag}"  # a dash and upper case: quoted
    url = embedded.database_url(pg_base_url, target)
    with connect(pg_base_url) as admin:
        try:
            reset_database(admin, template)
            with connect(embedded.database_url(pg_base_url, template)) as s:
                s.execute("create table from_template (x int)")
            reset_database(admin, target)
            with connect(url) as s:
                assert _tables(s) == []
                s.execute("create table stale (x int)")
            # another session still connected: the reset ends it rather than failing
            with psycopg.connect(url, autocommit=True) as other:
                other.execute("select 1")
                reset_database(admin, target, template=template)
            with connect(url) as s:
                assert _tables(s) == ["from_template"]
            reset_database(admin, target)
            with connect(url) as s:
                assert _tables(s) == []
        finally:
            for name in (target, template):
                admin.execute(f'drop database if exists "{name}" with (force)')
