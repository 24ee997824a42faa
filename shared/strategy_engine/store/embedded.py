"""The zero-config database: PostgreSQL 16 from the `pgserver` pip package.

It lives in a data folder of the user's (never the repository), starts in about a second, and
stops when the last process using it exits. Nothing to install, nothing to configure.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import platformdirs

from strategy_engine.core.errors import DatabaseUnavailable

HANDLE_PIDS = ".handle_pids.json"  # pgserver's list of the pids using the server


def default_data_dir() -> Path:
    """EMBEDDED_DATA_DIR if set, else the user's data folder (never the repository)."""
    from strategy_engine.settings import get_settings

    configured = get_settings().embedded_data_dir
    if configured:
        return Path(configured)
    return Path(platformdirs.user_data_dir("agenttrader-strategy-engine")) / "pgdata"


def start(data_dir: Path | None = None) -> str:
    """Start (or attach to) the embedded server; return its connection URL."""
    folder = (data_dir or default_data_dir()).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR under root
        import pgserver

        try:
            with pgserver.PostgresServer._lock:  # type: ignore[attr-defined]
                drop_dead_handles(folder)
            server = pgserver.get_server(folder, cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:  # pgserver raises plain exceptions on a failed initdb/start
            raise DatabaseUnavailable(f"embedded Postgres failed to start in {folder}: {exc}") from None
    return str(server.get_uri())


def drop_dead_handles(folder: Path) -> list[int]:
    """Remove the pids of exited processes from pgserver's list of the server's users
    (`.handle_pids.json`); return the pids dropped.

    pgserver stops the server when its last listed user exits, so a user killed without cleanup
    (SIGKILL, a crash) would otherwise keep it running forever. Call under pgserver's lock.
    """
    path = folder / HANDLE_PIDS
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(pids, list):
        return []
    dead = [p for p in pids if not (isinstance(p, int) and _alive(p))]
    if dead:
        path.write_text(json.dumps([p for p in pids if p not in dead]))
    return dead


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
