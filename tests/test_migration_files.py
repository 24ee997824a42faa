"""`migrate` on folders of our own making: which preflight runs, what a failing file leaves, the
history it writes, where the shipped folder is found, and files read as UTF-8 whatever the locale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import strategy_engine
from strategy_engine.core.errors import DatabaseUnavailable, MigrationRefused
from strategy_engine.store import Session, connect
from strategy_engine.store.migrations import LOCK_TIMEOUT, Migration, applied_versions, migrate, refusal
from tests.conftest import REPO

PASSES = "select 1;"


def _refuses(message: str) -> str:
    return f"do $$ begin raise exception using errcode = 'SEM01', message = '{message}'; end $$;"


def _file(check: str, body: str) -> str:
    """A migration file as sync_preflight.py lays one out: the checks block, then the changes."""
    return f"-- preflight: begin (copied from preflight.sql)\n{check}\n-- preflight: end\n{body}\n"


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _history(s: Session) -> list[tuple[object, ...]]:
    return s.fetchall(
        "select version, name, statements from supabase_migrations.schema_migrations order by version"
    )


def _exists(s: Session, table: str) -> bool:
    return s.fetchone("select to_regclass(%s) is not null", (f"public.{table}",)) == (True,)


def test_the_newest_checks_run_before_anything_and_their_refusal_applies_nothing(
    empty_db_url: str, tmp_path: Path
) -> None:
    """Only the last file's copy of the checks refuses: it must be the one that runs first, so
    the files before it are not applied either. The refusal names the first pending file."""
    folder = _folder(
        tmp_path,
        {
            "20990101000001_a.sql": _file(PASSES, "create table public.made_by_a (x int);"),
            "20990101000002_b.sql": _file(PASSES, "create table public.made_by_b (x int);"),
            "20990101000003_c.sql": _file(_refuses("the newest checks refuse"), "select 1;"),
        },
    )
    with connect(empty_db_url) as s:
        with pytest.raises(MigrationRefused) as exc:
            migrate(s, folder)
        assert str(exc.value) == (
            "migration 20990101000001_a.sql refused, nothing applied: the newest checks refuse"
        )
        assert not _exists(s, "made_by_a") and not _exists(s, "made_by_b")
        assert applied_versions(s) == set()


def test_a_failing_file_keeps_the_ones_before_it_recorded_and_the_next_run_resumes_after_them(
    empty_db_url: str, tmp_path: Path
) -> None:
    a = _file(PASSES, "create table public.made_by_a (x int);")
    c = _file(PASSES, "create table public.made_by_c (x int);")
    folder = _folder(
        tmp_path,
        {
            "20990101000001_a.sql": a,
            "20990101000002_b.sql": _file(PASSES, "create table public.made_by_b (x int);\nselect 1/0;"),
            "20990101000003_c.sql": c,
        },
    )
    with connect(empty_db_url) as s:
        with pytest.raises(MigrationRefused) as exc:
            migrate(s, folder)
        assert (
            str(exc.value) == "migration 20990101000002_b.sql failed, nothing of it applied: division by zero"
        )
        assert _history(s) == [("20990101000001", "a", [a])]
        assert [t for t in ("made_by_a", "made_by_b", "made_by_c") if _exists(s, t)] == ["made_by_a"]

        b = _file(PASSES, "create table public.made_by_b (x int);")  # the file, fixed
        (folder / "20990101000002_b.sql").write_text(b, encoding="utf-8")
        assert migrate(s, folder) == ["20990101000002", "20990101000003"]
        assert _history(s) == [
            ("20990101000001", "a", [a]),
            ("20990101000002", "b", [b]),
            ("20990101000003", "c", [c]),
        ]
        assert migrate(s, folder) == []


def test_a_history_table_that_rejects_our_row_is_a_refusal_naming_the_file(
    empty_db_url: str, tmp_path: Path
) -> None:
    """Another tool's history table requires a column we do not fill: the insert fails after the
    file ran, and the file is rolled back with it."""
    folder = _folder(
        tmp_path, {"20990101000001_a.sql": _file(PASSES, "create table public.made_by_a (x int);")}
    )
    with connect(empty_db_url) as s:
        s.execute(
            "create schema supabase_migrations;"
            " create table supabase_migrations.schema_migrations (version text primary key, who text not null)"
        )
        with pytest.raises(MigrationRefused) as exc:
            migrate(s, folder)
        assert str(exc.value) == (
            "migration 20990101000001_a.sql failed, nothing of it applied: null value in column"
            ' "who" of relation "schema_migrations" violates not-null constraint'
        )
        assert not _exists(s, "made_by_a")
        assert s.fetchone("select count(*) from supabase_migrations.schema_migrations") == (0,)


def test_an_error_raised_by_the_driver_itself_is_reported_in_its_words(
    empty_db_url: str, tmp_path: Path
) -> None:
    """A file with pg_dump's `COPY ... FROM stdin` fails in psycopg, not in the server: the error
    has no server message, and its own text is the reason given."""
    folder = _folder(
        tmp_path,
        {
            "20990101000001_a.sql": _file(
                PASSES, "create table public.made_by_a (x int);\ncopy public.made_by_a from stdin;"
            )
        },
    )
    with connect(empty_db_url) as s, pytest.raises(MigrationRefused) as exc:
        migrate(s, folder)
    assert str(exc.value) == (
        "migration 20990101000001_a.sql failed, nothing of it applied:"
        " COPY cannot be used with this method; use copy() instead"
    )
    with connect(empty_db_url) as s:
        assert not _exists(s, "made_by_a")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (  # a driver error without words or SQLSTATE (a connection lost): named by its type
            psycopg.OperationalError(),
            "stopped: the database went away while it ran, nothing of it applied;"
            " run it again when the database is back (OperationalError)",
        ),
        (
            psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
            f"waited {LOCK_TIMEOUT} for a lock that another session holds on a table it changes,"
            " nothing of it applied; run it again when that session is done"
            " (canceling statement due to lock timeout)",
        ),
    ],
)
def test_an_outage_is_one_line_naming_the_file_and_what_to_do(error: psycopg.Error, line: str) -> None:
    """`refusal` of an outage: exit 3's line. Before: an error whose text was empty raised
    IndexError from the reason's first line, not this line."""
    out = refusal(Migration("20990101000001", "a", Path("20990101000001_a.sql")), error)
    assert isinstance(out, DatabaseUnavailable)
    assert str(out) == f"migration 20990101000001_a.sql {line}"


def _outside(site: Path) -> dict[str, str]:
    """The environment of a Python run in `site`, outside the repository, importing from there.

    mutmut's stats mode (MUTANT_UNDER_TEST=stats) records which tests reach which code in files
    of the mutants folder, which a process outside it cannot find: that mode is not passed on
    (a mutant under test is)."""
    env = {k: v for k, v in os.environ.items() if (k, v) != ("MUTANT_UNDER_TEST", "stats")}
    return env | {"PYTHONPATH": str(site)}


def _python(script: str, *args: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_deployed_bundle_finds_the_migrations_shipped_inside_it(tmp_path: Path) -> None:
    """deploy.sh (copy_code) ships the library with infra/supabase/migrations copied to
    strategy_engine/migrations, and no repository around it (Lambda's /var/task)."""
    bundle = tmp_path / "task"
    shutil.copytree(Path(strategy_engine.__file__).parent, bundle / "strategy_engine")
    shutil.copytree(REPO / "infra" / "supabase" / "migrations", bundle / "strategy_engine" / "migrations")
    found = _python(
        "from strategy_engine.store.migrations import default_dir, discover\n"
        "print(default_dir()); print(','.join(m.path.name for m in discover(default_dir())))",
        env=_outside(bundle),
        cwd=bundle,
    ).splitlines()
    assert found[0] == str(bundle / "strategy_engine" / "migrations")
    assert found[1] == ",".join(sorted(p.name for p in (REPO / "infra/supabase/migrations").glob("*.sql")))


def test_files_are_read_as_utf8_under_an_ascii_locale(empty_db_url: str, tmp_path: Path) -> None:
    """The Supabase CLI reads migration files as UTF-8; so do we, whatever the machine's locale."""
    text = _file("select 'café';", "create table public.made_by_a (label text default 'déjà vu');")
    folder = _folder(tmp_path, {"20990101000001_a.sql": text})
    ascii_locale = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    applied = _python(
        "import sys\nfrom pathlib import Path\nfrom strategy_engine.store import connect\n"
        "from strategy_engine.store.migrations import migrate\n"
        "with connect(sys.argv[1]) as s: print(','.join(migrate(s, Path(sys.argv[2]))))",
        empty_db_url,
        str(folder),
        env={k: v for k, v in os.environ.items() if k != "LANG"} | ascii_locale,
        cwd=REPO,
    )
    assert applied == "20990101000001"
    with connect(empty_db_url) as s:
        assert _history(s) == [("20990101000001", "a", [text])]
        assert s.fetchone(
            "select column_default from information_schema.columns where table_name = 'made_by_a'"
        ) == ("'déjà vu'::text",)


def test_a_library_copied_without_its_migrations_says_what_is_missing(tmp_path: Path) -> None:
    """Installed on its own (no migrations beside it, no repository around it): the error a
    person reads names what is missing."""
    alone = tmp_path / "site"
    shutil.copytree(Path(strategy_engine.__file__).parent, alone / "strategy_engine")
    result = subprocess.run(
        [sys.executable, "-c", "from strategy_engine.store.migrations import default_dir; default_dir()"],
        capture_output=True,
        text=True,
        env=_outside(alone),
        cwd=alone,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    here = (alone / "strategy_engine").resolve()
    assert result.stderr.splitlines()[-1] == (
        f"strategy_engine.core.errors.MigrationRefused: no migrations folder: looked in {here / 'migrations'}"
        f" (a deployed bundle) and {here.parents[1] / 'infra' / 'supabase' / 'migrations'} (a checkout);"
        " run this from a checkout of the repository or a bundle made by deploy.sh"
    )


def test_a_connection_lost_while_a_file_runs_is_an_outage_and_nothing_of_it_stays(
    empty_db_url: str, tmp_path: Path
) -> None:
    """The server ends the session in the middle of a file (here the file asks for it, as an
    administrator's pg_terminate_backend or a failover would): exit 3, run it again, not exit 2."""
    a = _file(PASSES, "create table public.made_by_a (x int);")
    b = "create table public.made_by_b (x int);\nselect pg_terminate_backend(pg_backend_pid());\n"
    folder = _folder(tmp_path, {"20990101000001_a.sql": a, "20990101000002_b.sql": _file(PASSES, b)})
    with connect(empty_db_url) as s, pytest.raises(DatabaseUnavailable) as exc:
        migrate(s, folder)
    assert str(exc.value).startswith(
        "migration 20990101000002_b.sql stopped: the database went away while it ran, nothing of it"
        " applied; run it again when the database is back ("
    )
    with connect(empty_db_url) as s:
        assert _history(s) == [("20990101000001", "a", [a])]
        assert [t for t in ("made_by_a", "made_by_b") if _exists(s, t)] == ["made_by_a"]
        (folder / "20990101000002_b.sql").write_text(_file(PASSES, "create table public.made_by_b (x int);"))
        assert migrate(s, folder) == ["20990101000002"]
