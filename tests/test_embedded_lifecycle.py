"""The embedded server's own bookkeeping, in one process: `_abandon` (what an interrupted start
leaves), `_alive` (whose pid keeps a server running) and `stop` (this process's hold released).

Real servers (pgserver 16) in each test's own folder, never the session's; fake `postgres`
processes (python under that name) where a server would have to misbehave. Whatever a test
leaves running is killed at its end, even when it fails.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pgserver
import psutil  # type: ignore[import-untyped]
import psycopg
import pytest

from strategy_engine.settings import get_settings
from strategy_engine.store import embedded
from tests.test_http_serve import _gone
from tests.test_serve_attacks import _no_postgres_left, _postmasters

pytestmark = pytest.mark.slow

NOBODY = 65534  # an unprivileged uid: what a second OS user's process looks like to ours

_FAKE = """
import signal, sys, time
mode, marker = sys.argv[1], sys.argv[2]
def stop(*_):
    open(marker, "w").write("stopped")
    sys.exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "stuck" else stop)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A data folder of this test's own; its server and this process's handle gone at the end."""
    data = (tmp_path / "pgdata").resolve()
    yield data
    release(data)


def release(data: Path) -> None:
    """Drops this process's pgserver handle of `data` and stops whatever postgres still runs there."""
    server = pgserver.PostgresServer._instances.pop(data, None)  # type: ignore[attr-defined]
    if server is not None:
        atexit.unregister(server._cleanup)
    left = _postmasters(data)
    for proc in left:
        proc.send_signal(signal.SIGINT)
    for proc in psutil.wait_procs(left, timeout=30)[1]:
        proc.kill()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts processes that are killed at the test's end."""
    procs: list[subprocess.Popen[str]] = []

    def run(*args: str, executable: str = sys.executable) -> subprocess.Popen[str]:
        proc = subprocess.Popen([executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        proc.wait()


def _sleeper(spawn: Callable[..., subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    """A live process that reads its stdin to the end, then exits 0."""
    return spawn("-c", "import sys; sys.stdin.read()", *args)


def _users(data: Path) -> object:
    return json.loads((data / embedded.HANDLE_PIDS).read_text())


def _answers(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("select 1").fetchone() == (1,)


def test_an_interrupted_fresh_start_stops_its_postgres_and_the_next_start_works(folder: Path) -> None:
    """A signal once `pg_ctl start` launched postgres on a new folder: the server is stopped (no
    user is listed to stop it ever), the cluster is kept (a server ran in it, postmaster.opts),
    and this process's next start gets a new server, not the stopped one's handle."""
    embedded.start(folder)
    postmaster = int((folder / "postmaster.pid").read_text().splitlines()[0])
    assert (folder / "postmaster.opts").exists()

    embedded._abandon(folder, fresh=True)

    assert _gone(postmaster) and _no_postgres_left(folder)
    assert (folder / "PG_VERSION").exists() and _users(folder) == []
    url = embedded.start(folder)
    assert int((folder / "postmaster.pid").read_text().splitlines()[0]) != postmaster
    assert _answers(url) and _users(folder) == [os.getpid()]
    assert embedded.stop(folder) is True and _no_postgres_left(folder)


def test_an_interrupted_start_leaves_the_server_of_another_live_user_running(
    folder: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    """Another process still listed as a user (alive): the abandon takes only this process off
    the list; the server, the folder and the other's entry stay."""
    url = embedded.start(folder)
    other = _sleeper(spawn)
    (folder / embedded.HANDLE_PIDS).write_text(json.dumps([other.pid, os.getpid()]))

    embedded._abandon(folder, fresh=True)

    assert _users(folder) == [other.pid]
    assert _answers(url) and (folder / "PG_VERSION").exists()
    other.communicate("")  # the other user leaves without cleanup: the next start drops its pid
    embedded.start(folder)
    assert _users(folder) == [os.getpid()]
    assert embedded.stop(folder) is True and _no_postgres_left(folder)


def test_an_initdb_cut_short_leaves_no_folder_behind(folder: Path) -> None:
    """initdb interrupted on a new folder (PG_VERSION without a cluster, no server ever ran):
    the folder is removed, nothing renamed aside is left, and the next start makes a new one."""
    folder.mkdir()
    (folder / "PG_VERSION").write_text("16\n")
    (folder / "base").mkdir()

    embedded._abandon(folder, fresh=True)

    assert sorted(p.name for p in folder.parent.iterdir()) == []
    assert _answers(embedded.start(folder))
    assert embedded.stop(folder) is True and _no_postgres_left(folder)


@pytest.mark.timeout(120)  # the stuck one is killed after 30 s; a hang must fail, not wait 300 s
def test_abandon_sigints_only_the_folders_postgres_then_kills_one_that_ignores_it(
    tmp_path: Path,
    folder: Path,
    spawn: Callable[..., subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The folder's postgres processes get SIGINT (a fast shutdown); one still running after
    `STOP_GRACE_S` (30 s; 2 s here) is killed. Another folder's postgres, and a process that
    only names the folder, are left alone. (No pgserver instance in this process: as after a
    user killed without cleanup.)"""
    folder.mkdir()
    (folder / "PG_VERSION").write_text("16\n")
    (folder / "postmaster.opts").write_text("postgres\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "postgres"
    fake.symlink_to(sys.executable)
    other = (tmp_path / "other").resolve()

    def postgres(mode: str, data: Path) -> tuple[subprocess.Popen[str], Path]:
        marker = tmp_path / f"{mode}-{data.name}"
        proc = spawn("-c", _FAKE, mode, str(marker), "-D", str(data), executable=str(fake))
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert psutil.Process(proc.pid).name() == "postgres"
        return proc, marker

    clean, clean_marker = postgres("clean", folder)
    stuck, stuck_marker = postgres("stuck", folder)
    elsewhere, elsewhere_marker = postgres("clean", other)
    bystander = _sleeper(spawn, str(folder))

    monkeypatch.setattr(embedded, "STOP_GRACE_S", 2.0)
    embedded._abandon(folder, fresh=False)

    assert clean_marker.read_text() == "stopped"
    assert _gone(clean.pid) and _gone(stuck.pid)
    assert not stuck_marker.exists()  # never stopped by itself: killed
    assert elsewhere.poll() is None and not elsewhere_marker.exists()
    assert bystander.poll() is None
    assert (folder / "PG_VERSION").exists()


@pytest.mark.parametrize(("fresh", "opts"), [(False, False), (True, True)])
def test_abandon_keeps_a_folder_it_did_not_create_or_a_server_ran_in(
    folder: Path, fresh: bool, opts: bool
) -> None:
    """Only a folder this start was creating, with no server ever run in it, is removed."""
    folder.mkdir()
    (folder / "PG_VERSION").write_text("16\n")
    if opts:
        (folder / "postmaster.opts").write_text("postgres\n")
    (folder / embedded.HANDLE_PIDS).write_text(json.dumps([os.getpid()]))

    embedded._abandon(folder, fresh=fresh)

    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".handle_pids.json", "PG_VERSION"] + (["postmaster.opts"] if opts else [])
    )
    assert _users(folder) == []


def _as_nobody(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs python `code` as another, unprivileged OS user (we are root here)."""

    def drop() -> None:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    runtime = tempfile.mkdtemp()  # pgserver's lock folder, one the user may write
    os.chown(runtime, NOBODY, NOBODY)
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=os.environ | {"XDG_RUNTIME_DIR": runtime, "HOME": runtime},
            cwd=runtime,
            preexec_fn=drop,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(runtime)


def _others_may_run(path: str) -> bool:
    """Whether a user other than the owner may run `path`: every folder on the way searchable by
    others (a Python under a home only its owner enters, /root at mode 700, is not)."""
    real = Path(path).resolve()
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o001)


root_only = pytest.mark.skipif(
    os.geteuid() != 0 or not _others_may_run(sys.executable),
    reason="needs root, and a Python another user may run, to run a process as another user",
)


@root_only
def test_abandon_of_a_folder_it_cannot_wholly_remove_does_not_raise() -> None:
    """A half-made folder with a part the user may not delete: the folder's path is freed for the
    next start and the abandon raises nothing (an error there would replace the start's own)."""
    top = Path(tempfile.mkdtemp())
    try:
        data = top / "pgdata"
        (data / "base").mkdir(parents=True)
        (data / "PG_VERSION").write_text("16\n")
        (data / "base" / "1").write_text("")
        for p in (top, data, data / "base", data / "PG_VERSION", data / "base" / "1"):
            os.chown(p, NOBODY, NOBODY)
        top.chmod(0o755)
        (data / "base").chmod(0o500)  # its file cannot be removed by its owner
        code = "import sys; from pathlib import Path; from strategy_engine.store import embedded; embedded._abandon(Path(sys.argv[1]), True)"
        done = _as_nobody(code, str(data))
        assert done.returncode == 0, done.stderr
        assert not data.exists()
    finally:
        for p in top.rglob("*"):
            if p.is_dir():
                p.chmod(0o700)
        shutil.rmtree(top)


def test_alive_is_true_for_a_running_process_and_leaves_it_running(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    proc = _sleeper(spawn)
    assert embedded._alive(proc.pid) is True
    proc.communicate("")
    assert proc.returncode == 0  # not signalled by the check


def test_alive_is_false_for_an_exited_process(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    proc = _sleeper(spawn)
    proc.communicate("")
    assert embedded._alive(proc.pid) is False


@root_only
def test_alive_is_true_for_a_process_of_another_user() -> None:
    """Signal 0 to a process we may not signal fails with EPERM: it exists, so it still uses the
    server (dropping it would let the server stop under it)."""
    done = _as_nobody(
        "import sys; from strategy_engine.store import embedded; print(embedded._alive(int(sys.argv[1])))",
        str(os.getpid()),
    )
    assert (done.returncode, done.stdout) == (0, "True\n"), done.stderr


def test_stop_without_a_server_started_here(folder: Path) -> None:
    folder.mkdir()
    assert embedded.stop(folder) is True


def test_stop_stops_the_server_this_process_started_in_the_folder_given(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder passed, not EMBEDDED_DATA_DIR's (here another, empty one)."""
    monkeypatch.setenv("EMBEDDED_DATA_DIR", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    embedded.start(folder)
    postmaster = int((folder / "postmaster.pid").read_text().splitlines()[0])
    assert embedded.stop(folder) is True
    assert _gone(postmaster) and _users(folder) == []


def test_stop_leaves_a_server_another_process_uses_and_says_so(
    folder: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    url = embedded.start(folder)
    other = _sleeper(spawn)
    (folder / embedded.HANDLE_PIDS).write_text(json.dumps([other.pid, os.getpid()]))

    assert embedded.stop(folder) is False
    assert _answers(url) and _users(folder) == [other.pid]
