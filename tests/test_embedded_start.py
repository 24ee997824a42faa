"""The embedded server's start and the small decisions around it: where its data lives
(`default_data_dir`), which URLs are its (`is_embedded_url`, `database_url`), and whose pids keep
it running (`drop_dead_handles`, `_read_pids`). Servers run in each test's own folder and are
stopped at its end, even when it fails (`release`, as in test_embedded_lifecycle.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from strategy_engine.core.errors import DatabaseUnavailable, InputError
from strategy_engine.settings import get_settings
from strategy_engine.store import embedded
from tests.test_embedded_lifecycle import release
from tests.test_serve_attacks import _no_postgres_left

APP = "agenttrader-strategy-engine"  # the user data folder's name: where every earlier run's data is


def _use(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """EMBEDDED_DATA_DIR set to this test's own folder (not created)."""
    data = (tmp_path / "pgdata").resolve()
    _use(monkeypatch, EMBEDDED_DATA_DIR=str(data))
    return data


def test_default_data_dir_is_embedded_data_dir_when_set(data_dir: Path) -> None:
    assert embedded.default_data_dir() == data_dir


def test_default_data_dir_is_the_users_data_folder_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XDG's data home (Linux), the app's folder in it: the same path for every release, or an
    upgrade would start an empty server and the user's accounts would seem gone."""
    _use(monkeypatch, EMBEDDED_DATA_DIR=None, XDG_DATA_HOME=str(tmp_path / "xdg"))
    assert embedded.default_data_dir() == tmp_path / "xdg" / APP / "pgdata"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("{data}", True),  # what pgserver's get_uri gives
        ("{data}/", True),
        ("{data}-other", False),
        ("{data}/sub", False),
        ("/var/run/postgresql", False),  # the system server's socket
    ],
)
def test_is_embedded_url_compares_the_socket_folder(data_dir: Path, host: str, expected: bool) -> None:
    url = f"postgresql://postgres:@/strategy_engine_demo?host={host.format(data=data_dir)}"
    assert embedded.is_embedded_url(url) is expected


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres.abcdef:pw@aws-0-us-east-1.pooler.supabase.com:6543/postgres",
        "postgresql://u:pw@db.example.test:5432/postgres?sslmode=require",
        "postgresql://u:pw@[::1/postgres?host={data}",  # unparseable (ValueError): not ours
    ],
)
def test_is_embedded_url_is_false_for_urls_without_our_socket(data_dir: Path, url: str) -> None:
    assert embedded.is_embedded_url(url.format(data=data_dir)) is False


def test_is_embedded_url_keeps_a_folder_names_last_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only slashes are trimmed from the host: a folder ending in X is not its prefix's."""
    _use(monkeypatch, EMBEDDED_DATA_DIR=str(tmp_path / "dataX"))
    assert embedded.is_embedded_url(f"postgresql://postgres:@/postgres?host={tmp_path}/dataX") is True
    assert embedded.is_embedded_url(f"postgresql://postgres:@/postgres?host={tmp_path}/dataXX") is False


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("postgresql://postgres:@/postgres?host=/d/pgdata", "postgresql://postgres:@/demo?host=/d/pgdata"),
        ("postgresql://u:pw@db.example.test:5432/postgres", "postgresql://u:pw@db.example.test:5432/demo"),
        (
            "postgresql://u:pw@db.example.test:5432/postgres?sslmode=require&application_name=a?b",
            "postgresql://u:pw@db.example.test:5432/demo?sslmode=require&application_name=a?b",
        ),
    ],
)
def test_database_url_changes_only_the_database(base: str, expected: str) -> None:
    assert embedded.database_url(base, "demo") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, []),  # no file
        ("[1, 2]", [1, 2]),
        ("[]", []),
        ("", []),
        ("[1, 2", []),  # cut short
        ("null", []),
        ("5", []),
        ('{"1": 2}', []),
        ('"12"', []),
    ],
)
def test_read_pids_is_the_list_or_empty(tmp_path: Path, text: str | None, expected: list[int]) -> None:
    path = tmp_path / embedded.HANDLE_PIDS
    if text is not None:
        path.write_text(text)
    assert embedded._read_pids(path) == expected


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()  # exited and reaped: no such process
    return proc.pid


def test_drop_dead_handles_keeps_the_live_users_only(tmp_path: Path) -> None:
    """A dead pid and an entry that is no pid are dropped and returned; live ones stay, in order."""
    dead = _dead_pid()
    listed = [os.getpid(), dead, "junk", os.getppid()]
    (tmp_path / embedded.HANDLE_PIDS).write_text(json.dumps(listed))

    assert embedded.drop_dead_handles(tmp_path) == [dead, "junk"]
    assert json.loads((tmp_path / embedded.HANDLE_PIDS).read_text()) == [os.getpid(), os.getppid()]


def test_drop_dead_handles_without_a_list(tmp_path: Path) -> None:
    assert embedded.drop_dead_handles(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def default_folder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Nothing configured: the data folder is the user's, under an XDG data home not yet made.

    Under a short folder of its own, not pytest's tmp_path: a Unix socket path has at most 107
    bytes, and beyond that pgserver puts the socket elsewhere (a fresh clone's basetemp is long
    enough to cross it)."""
    home = Path(tempfile.mkdtemp(prefix="se-", dir="/tmp"))
    _use(monkeypatch, EMBEDDED_DATA_DIR=None, DATABASE_URL=None, XDG_DATA_HOME=str(home / "share"))
    data = home / "share" / APP / "pgdata"
    try:
        yield data
    finally:
        release(data)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_a_first_start_with_nothing_configured_makes_the_users_data_folder(default_folder: Path) -> None:
    """The folder and its missing parents are made; the URL is the folder's socket, which
    `is_embedded_url` recognises; the server answers and stops with its last user."""
    url = embedded.start()

    assert url == f"postgresql://postgres:@/postgres?host={default_folder}"
    assert (default_folder / "PG_VERSION").exists() and (default_folder / "postmaster.pid").exists()
    assert embedded.is_embedded_url(url) is True
    with psycopg.connect(url) as conn:
        assert conn.execute("select current_setting('data_directory')").fetchone() == (str(default_folder),)
    assert embedded.stop() is True and _no_postgres_left(default_folder)


@pytest.mark.slow
def test_a_failed_start_on_an_existing_cluster_keeps_it_and_says_where(data_dir: Path) -> None:
    """A folder holding a cluster (PG_VERSION) whose server will not start (here: no
    postgresql.conf): an outage naming the folder and pg_ctl's failure; the folder is not this
    start's to remove, even though no server ever ran in it (no postmaster.opts)."""
    (data_dir / "base").mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("16\n")
    (data_dir / "base" / "1").write_text("rows")

    handlers = list(logging.getLogger("pgserver").handlers)

    with pytest.raises(DatabaseUnavailable) as caught:
        embedded.start()

    # pg_ctl's reason line, from the 20 lines pgserver logged, not pgserver's exception
    # ("Command '[.../pg_ctl', ...]' returned non-zero exit status 1.")
    reason = "pg_ctl: could not start server"
    assert str(caught.value) == f"embedded Postgres failed to start in {data_dir}: {reason}"
    assert logging.getLogger("pgserver").handlers == handlers  # the start's listener removed
    assert (data_dir / "PG_VERSION").read_text() == "16\n" and (data_dir / "base" / "1").read_text() == "rows"
    assert _no_postgres_left(data_dir)


def test_a_failed_start_that_pgserver_did_not_log_gives_its_exceptions_words(data_dir: Path) -> None:
    """A cluster whose postmaster.pid is not one (a single line, as after a crash mid-write):
    pgserver raises without logging a reason, so the line carries its exception's words; the
    folder is kept (not this start's) and the listener is removed."""
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("16\n")
    (data_dir / "postmaster.pid").write_text("999999\n")
    handlers = list(logging.getLogger("pgserver").handlers)

    with pytest.raises(DatabaseUnavailable) as caught:
        embedded.start()

    head = f"embedded Postgres failed to start in {data_dir}: "
    assert str(caught.value).startswith(head)
    # pgserver's assertion on the file's 8 lines, ending with the one line it found
    assert str(caught.value).endswith(" lines: lines=['999999']") and "\n" not in str(caught.value)
    assert logging.getLogger("pgserver").handlers == handlers
    assert sorted(p.name for p in data_dir.iterdir()) == ["PG_VERSION", "postmaster.pid"]


def test_told_keeps_the_first_reason_line_of_the_errors_logged() -> None:
    """`_Told` takes, from the records at ERROR and above, the first line that is a reason
    (`<program>: error: ...`, `FATAL: ...`, `pg_ctl: ...`); other lines and lower levels are
    passed over."""
    log = logging.getLogger("tests.told")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    told = embedded._Told()
    log.addHandler(told)
    try:
        log.info("pg_ctl: an info line, not a failure")
        log.error("Failed postgres command\nstdout:\nwaiting for server to start")
        log.error("Failed postgres command\nstderr:\ninitdb: error: directory exists  \nFATAL: later")
        log.error("pg_ctl: could not start server")
    finally:
        log.removeHandler(told)
    assert told.reason == "initdb: error: directory exists"


def test_a_start_in_a_folder_of_other_files_is_refused_before_touching_them(data_dir: Path) -> None:
    """BROKE: EMBEDDED_DATA_DIR naming a folder of someone's files (no cluster): initdb refuses a
    non-empty folder, and the failed start then removed the folder as one it had been creating.
    Then (helper atkF): pgserver, run as root, had chowned the folder to its user first, and the
    error was 20 lines of initdb's output and an exit 3 that no retry can cure. Now: refused
    before pgserver runs, one line, exit 2 (InputError); the folder and its files as they were."""
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("keep me")
    (data_dir / "postmaster.pid").write_text("999999\n")  # a stale one, someone's copy
    before = [(p.name, p.stat().st_uid, p.read_text()) for p in sorted(data_dir.iterdir())]
    owner = data_dir.stat().st_uid

    with pytest.raises(InputError) as caught:
        embedded.start()

    assert str(caught.value) == (
        f"the embedded database folder {data_dir} holds other files and no database cluster"
        " (no PG_VERSION): set EMBEDDED_DATA_DIR to a new or empty folder"
    )
    assert [(p.name, p.stat().st_uid, p.read_text()) for p in sorted(data_dir.iterdir())] == before
    assert data_dir.stat().st_uid == owner
    assert [p.name for p in data_dir.parent.iterdir()] == ["pgdata"]  # nothing renamed aside


@pytest.mark.parametrize(
    ("make", "why"), [("file", "is a file, not a folder"), ("under", "cannot be used: Not a directory")]
)
def test_a_data_folder_that_is_a_file_is_one_line_and_exit_2(data_dir: Path, make: str, why: str) -> None:
    """BROKE (helper atkF): EMBEDDED_DATA_DIR naming a file, or a folder under one, was a Python
    traceback (FileExistsError / NotADirectoryError from mkdir), exit 1. Now one line, exit 2."""
    data_dir.write_text("someone's file")
    target = data_dir if make == "file" else data_dir / "sub"
    with pytest.raises(InputError) as caught:
        embedded.start(target)
    assert str(caught.value) == f"the embedded database folder {target} {why}"
    assert data_dir.read_text() == "someone's file"
    run = subprocess.run(
        [sys.executable, "-m", "strategy_engine.cli", "db", "migrate"],
        check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "EMBEDDED_DATA_DIR": str(target)},
    )  # fmt: skip
    assert (run.returncode, run.stdout, run.stderr) == (
        2,
        "",
        f"error: the embedded database folder {target} {why}\n",
    )
