"""PostgreSQL 15 from Debian (`postgresql-15`, `postgresql-15-cron`), started by the suite.

Supabase runs 15 on older projects; the suite's main server is pgserver's 16. This one lives in
a temporary folder, listens on a unix socket in that folder only, and preloads pg_cron (whose
scheduler works in the `postgres` database). `make test` installs the packages when missing.
Postgres refuses to run as root, so under root the server runs as the `postgres` system user
that the Debian package creates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
CRON_LIBRARY = Path("/usr/lib/postgresql/15/lib/pg_cron.so")
SETTINGS = """
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
"""


@dataclass(frozen=True, slots=True)
class Server:
    url: str  # database `postgres`, the unix socket folder in ?host=
    folder: Path
    run_as: str | None

    def stop(self) -> None:
        _run(self.run_as, str(BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def missing() -> str | None:
    """Why PostgreSQL 15 cannot start here, or None."""
    if not (BIN / "initdb").is_file():
        return "PostgreSQL 15 is not installed (make test installs postgresql-15 with apt)"
    if not CRON_LIBRARY.is_file():
        return "pg_cron for PostgreSQL 15 is not installed (make test installs postgresql-15-cron)"
    return None


def _run(user: str | None, *cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, user=user, timeout=120)


def start() -> Server:
    """initdb + pg_ctl start in a fresh folder under the system temp dir (short socket path)."""
    run_as = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="se-pg15-"))
    if run_as:
        shutil.chown(folder, run_as, run_as)
    data = folder / "data"
    _run(run_as, str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--locale=C.UTF-8")  # fmt: skip
    with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(SETTINGS.format(socket_dir=folder))
    _run(run_as, str(BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start")
    return Server(f"postgresql://postgres@localhost/postgres?host={folder}", folder, run_as)
