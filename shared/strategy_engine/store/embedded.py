"""The zero-config database: PostgreSQL 16 from the `pgserver` pip package.

It lives in a data folder of the user's (never the repository), starts in about a second, and
stops when the last process using it exits. Nothing to install, nothing to configure.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from strategy_engine.core.errors import DatabaseUnavailable, InputError

HANDLE_PIDS = ".handle_pids.json"  # pgserver's list of the pids using the server
# Seconds a postgres of an abandoned start has to stop on SIGINT (a fast shutdown) before SIGKILL.
STOP_GRACE_S = 30.0


def default_data_dir() -> Path:
    """EMBEDDED_DATA_DIR if set, else the user's data folder (never the repository)."""
    from strategy_engine.settings import get_settings

    configured = get_settings().embedded_data_dir
    if configured:
        return Path(configured)
    return Path(platformdirs.user_data_dir("agenttrader-strategy-engine")) / "pgdata"


def start(data_dir: Path | None = None) -> str:
    """Start (or attach to) the embedded server; return its connection URL.

    Raises InputError (exit 2) when the folder cannot be one (a file, unwritable, or a folder of
    other files with no cluster: refused before anything in it is touched), DatabaseUnavailable
    (exit 3) when the server fails to start; each one line, naming the folder."""
    folder = (data_dir or default_data_dir()).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # only a folder this start makes (absent or empty) may be removed if it fails: never a
        # cluster, never someone's files in a folder EMBEDDED_DATA_DIR named by mistake
        fresh = next(folder.iterdir(), None) is None
    except OSError as exc:
        why = "is a file, not a folder" if folder.is_file() else f"cannot be used: {exc.strerror or exc}"
        raise InputError(f"the embedded database folder {folder} {why}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR under root
        import pgserver

        # Under pgserver's lock: a start in another process holds it while its initdb fills the folder.
        with pgserver.PostgresServer._lock:  # type: ignore[attr-defined]
            stray = not (folder / "PG_VERSION").exists() and next(folder.iterdir(), None) is not None
        if stray:
            raise InputError(
                f"the embedded database folder {folder} holds other files and no database cluster"
                " (no PG_VERSION): set EMBEDDED_DATA_DIR to a new or empty folder"
            )
        told = _Told()
        _PGSERVER_LOG.addHandler(told)
        try:
            with pgserver.PostgresServer._lock:  # type: ignore[attr-defined]
                drop_dead_handles(folder)
            server = pgserver.get_server(folder, cleanup_mode="stop")  # type: ignore[attr-defined]
        except BaseException as exc:  # a failed initdb/start, or Ctrl-C / SIGTERM in the middle
            with _signals_deferred():
                _abandon(folder, fresh)
            if isinstance(exc, Exception):  # pgserver raises plain exceptions
                why = told.reason or " ".join(str(exc).split())
                raise DatabaseUnavailable(f"embedded Postgres failed to start in {folder}: {why}") from None
            raise
        finally:
            _PGSERVER_LOG.removeHandler(told)
    return str(server.get_uri())


# pgserver logs a failed command's whole output (20 lines) as an error: printed to stderr by
# logging's last resort when no handler is set. Its reason goes in our one line instead.
_PGSERVER_LOG = logging.getLogger("pgserver")
_PGSERVER_LOG.addHandler(logging.NullHandler())
_REASON = re.compile(r"^(?:\S+: error: |FATAL: |pg_ctl: ).*$", re.M)


class _Told(logging.Handler):
    """Keeps the first reason line (`initdb: error: ...`, `FATAL: ...`) pgserver logs as an error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reason = ""

    def emit(self, record: logging.LogRecord) -> None:
        m = _REASON.search(record.getMessage())
        if m and not self.reason:
            self.reason = m.group(0).strip()


def _abandon(folder: Path, fresh: bool) -> None:
    """Undo a start that did not finish, unless another process uses the server.

    pgserver lists this process as a user only once the server is up, so a postgres that
    `pg_ctl start` launched before the interrupt had no user to stop it, ever; and an `initdb`
    cut short leaves PG_VERSION without a cluster, which every later start refuses. So: stop
    the folder's postgres, and remove a folder this start was creating (no server ever ran in it).
    """
    import pgserver
    import psutil  # type: ignore[import-untyped]  # pgserver depends on it

    server = pgserver.PostgresServer._instances.pop(folder, None)  # type: ignore[attr-defined]
    if server is not None:
        atexit.unregister(server._cleanup)
    with pgserver.PostgresServer._lock:  # type: ignore[attr-defined]
        drop_dead_handles(folder)
        path = folder / HANDLE_PIDS
        users = [p for p in _read_pids(path) if p != os.getpid()]
        if path.exists():
            path.write_text(json.dumps(users))
        if users:
            return
        running = [
            p
            for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(folder) in (p.info["cmdline"] or [])
        ]
        for p in running:
            p.send_signal(signal.SIGINT)  # postgres's fast shutdown
        for p in psutil.wait_procs(running, timeout=STOP_GRACE_S)[1]:
            p.kill()
        if fresh and not (folder / "postmaster.opts").exists():
            # renamed first: a file written late into the old path (pg_ctl's log) cannot remain
            aside = folder.with_name(f"{folder.name}.abandoned-{os.getpid()}")
            folder.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act as they would have: a second
    Ctrl-C must not cut a stop short and leave the server running with no user listed."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    caught: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _: caught.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in caught[:1]:
            signal.raise_signal(signum)


def drop_dead_handles(folder: Path) -> list[int]:
    """Remove the pids of exited processes from pgserver's list of the server's users
    (`.handle_pids.json`); return the pids dropped.

    pgserver stops the server when its last listed user exits, so a user killed without cleanup
    (SIGKILL, a crash) would otherwise keep it running forever. Call under pgserver's lock.
    """
    path = folder / HANDLE_PIDS
    pids = _read_pids(path)
    dead = [p for p in pids if not (isinstance(p, int) and _alive(p))]
    if dead:
        path.write_text(json.dumps([p for p in pids if p not in dead]))
    return dead


def _read_pids(path: Path) -> list[int]:
    """pgserver's list of users; empty when missing or unreadable."""
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return pids if isinstance(pids, list) else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def stop(data_dir: Path | None = None) -> bool:
    """Release this process's hold on the embedded server started by `start`; the server stops
    unless another process still uses it (pgserver counts its users). No-op if not started here.
    Returns True when the server is no longer running (its postmaster.pid is gone)."""
    folder = (data_dir or default_data_dir()).expanduser().resolve()
    import pgserver

    server = pgserver.PostgresServer._instances.get(folder)  # type: ignore[attr-defined]
    if server is not None:
        with _signals_deferred():
            server.cleanup()
    return not (folder / "postmaster.pid").exists()


def database_url(base_url: str, dbname: str) -> str:
    """The same server's URL for another database (pgserver URLs carry the socket in ?host=)."""
    head, sep, query = base_url.partition("?")
    root = head.rsplit("/", 1)[0]
    return f"{root}/{dbname}{sep}{query}"


def is_embedded_url(url: str) -> bool:
    """True for a URL on the embedded server's socket (e.g. the demo database the demo prints)."""
    from urllib.parse import parse_qs, urlsplit

    try:
        hosts = parse_qs(urlsplit(url).query).get("host", [])
    except ValueError:
        return False
    folder = str(default_data_dir().expanduser().resolve())
    return any(h.rstrip("/") == folder for h in hosts)
