"""The real Supabase CLI (npm `supabase`, pinned in package-lock.json) against the test server.

`supabase db push --db-url` applies infra/supabase/migrations, a second push applies nothing,
`supabase migration list` shows each one applied, and `strategy-engine db migrate` and the CLI
keep one history (`supabase_migrations.schema_migrations`), so either can follow the other.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from strategy_engine.store import connect
from strategy_engine.store.migrations import applied_versions, default_dir, discover, migrate
from tests.conftest import REPO
from tests.test_existing_databases import DUPLICATES
from tests.test_existing_databases_upgrades import ENGINE_TABLES, stop8_partially_applied

SUPABASE = REPO / "node_modules" / ".bin" / "supabase"
ALL = [m.version for m in discover(default_dir())]


def cli_url(url: str) -> str:
    """The test URL in the form the CLI (pgx) takes for a unix socket: host=localhost, ?host=DIR."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query)["host"][0]
    return f"postgresql://postgres@localhost{parts.path}?host={socket_dir}"


def supabase(*args: str, url: str, workdir: Path = REPO / "infra") -> subprocess.CompletedProcess[str]:
    if not SUPABASE.is_file():
        pytest.fail(f"{SUPABASE} is missing: `make test` runs `npm ci` (package-lock.json pins the CLI)")
    return subprocess.run(
        [str(SUPABASE), *args, "--workdir", str(workdir), "--db-url", cli_url(url)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def listed(url: str, workdir: Path = REPO / "infra") -> list[tuple[str, str]]:
    """(local, remote) version pairs of `supabase migration list`."""
    out = supabase("migration", "list", url=url, workdir=workdir)
    assert out.returncode == 0, out.stderr
    rows = []
    for line in out.stdout.splitlines():
        cells = [c.strip(" `") for c in line.split("|")]
        if len(cells) == 3 and re.fullmatch(r"\d{14}", cells[0] or cells[1]):
            rows.append((cells[0], cells[1]))
    return rows


def pushed(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return re.findall(r"^Applying migration (\d{14})_\w+\.sql\.\.\.$", result.stderr + result.stdout, re.M)


def test_pinned_cli_is_the_one_in_the_lock() -> None:
    lock = (REPO / "package-lock.json").read_text()
    pinned = re.search(r'"node_modules/supabase": \{\s*"version": "([^"]+)"', lock)
    assert pinned is not None
    version = subprocess.run(
        [str(SUPABASE), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert version.stdout.strip() == pinned.group(1) == "2.117.0"
    assert "resolved" not in lock and "registry" not in lock  # no download URL is committed


def test_db_push_applies_every_migration_then_nothing_and_lists_them(empty_db_url: str) -> None:
    with connect(empty_db_url) as s:  # one table of the project's: it must not get the engine's mark
        s.execute("create table public.market_data_1m (symbol text, ts timestamptz, close numeric)")
    assert pushed(supabase("db", "push", "--yes", url=empty_db_url)) == ALL
    again = supabase("db", "push", "--yes", url=empty_db_url)
    assert pushed(again) == [] and "Remote database is up to date" in again.stdout + again.stderr
    assert listed(empty_db_url) == [(v, v) for v in ALL]
    with connect(empty_db_url) as s:
        assert migrate(s) == []  # the engine's runner reads the CLI's history
        assert s.fetchone("select to_regclass('public.strategy_state')") == ("strategy_state",)
        marked = s.fetchall(
            "select c.relname::text from pg_class c where c.relnamespace = 'public'::regnamespace"
            " and obj_description(c.oid, 'pg_class') = 'agenttrader-engine' order by 1"
        )
        assert marked == [(t,) for t in ENGINE_TABLES if t != "market_data_1m"]
        assert s.fetchone("select relrowsecurity from pg_class where oid = 'market_data_1m'::regclass") == (
            False,
        )


def test_engine_and_cli_each_continue_what_the_other_applied(empty_db_url: str, tmp_path: Path) -> None:
    first_half = tmp_path / "migrations"
    first_half.mkdir()
    for mig in discover(default_dir())[:3]:
        shutil.copy(mig.path, first_half / mig.path.name)
    with connect(empty_db_url) as s:
        assert migrate(s, first_half) == ALL[:3]
    assert listed(empty_db_url) == [(v, v) for v in ALL[:3]] + [(v, "") for v in ALL[3:]]
    assert pushed(supabase("db", "push", "--yes", url=empty_db_url)) == ALL[3:]
    with connect(empty_db_url) as s:
        assert migrate(s) == []
        assert s.fetchall("select version from supabase_migrations.schema_migrations order by 1") == [
            (v,) for v in ALL
        ]


def test_db_push_stops_on_the_same_refusal_and_records_nothing_more(empty_db_url: str) -> None:
    with connect(empty_db_url) as s:
        s.execute(DUPLICATES)
    result = supabase("db", "push", "--yes", url=empty_db_url)
    assert result.returncode != 0
    assert "public.market_data_1m has 1 duplicated (symbol, ts) key(s)" in result.stderr
    assert "SQLSTATE SEM01" in result.stderr
    with connect(empty_db_url) as s:
        assert applied_versions(s) == {ALL[0]}
        assert s.fetchone("select count(*) from public.market_data_1m") == (3,)


def test_db_push_checks_a_database_that_applied_older_versions_of_the_first_files(
    empty_db_url: str, tmp_path: Path
) -> None:
    stop8_partially_applied(empty_db_url, tmp_path)  # stop-8 files 000 and 000100, no preflight then
    result = supabase("db", "push", "--yes", url=empty_db_url)
    assert result.returncode != 0
    assert "public.paper_trades.submitted_at is timestamp without time zone" in result.stderr
    assert "SQLSTATE SEM01" in result.stderr
    with connect(empty_db_url) as s:
        assert applied_versions(s) == set(ALL[:2])


PROJECT_VERSION = "20270101000000"  # the project's own migration, later than every engine file


def test_a_project_with_its_own_history_gets_the_engine_through_its_own_folder(
    empty_db_url: str, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "supabase" / "migrations").mkdir(parents=True)
    (project / "supabase" / "migrations" / f"{PROJECT_VERSION}_notes.sql").write_text(
        "create table public.notes (id bigint generated by default as identity primary key, body text);"
    )
    assert pushed(supabase("db", "push", "--yes", url=empty_db_url, workdir=project)) == [PROJECT_VERSION]
    # from the engine's own folder the CLI stops at the project's version (and suggests a
    # `migration repair` that must not be run)
    direct = supabase("db", "push", "--yes", url=empty_db_url)
    assert direct.returncode != 0
    assert "Remote migration versions not found in local migrations directory" in direct.stderr
    env = {**os.environ, "SUPABASE_DB_URL": cli_url(empty_db_url), "SUPABASE_CLI_DIR": str(SUPABASE.parent)}
    deployed = subprocess.run(
        ["/bin/bash", str(REPO / "deploy.sh"), "--db-only", "--supabase-dir", str(project)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"--workdir {project} --include-all" in deployed.stdout
    assert sorted(p.name for p in (project / "supabase" / "migrations").iterdir()) == sorted(
        [f"{PROJECT_VERSION}_notes.sql"] + [m.path.name for m in discover(default_dir())]
    )
    assert listed(empty_db_url, project) == [(v, v) for v in [*ALL, PROJECT_VERSION]]
    with connect(empty_db_url) as s:
        assert migrate(s) == []  # the engine's runner agrees: everything of ours is applied
        assert s.fetchone("select to_regclass('public.notes'), to_regclass('public.strategy_state')") == (
            "notes",
            "strategy_state",
        )
