"""Applies `infra/supabase/migrations/<version>_<name>.sql` in version order, once each.

History goes in `supabase_migrations.schema_migrations`, the table the Supabase CLI itself
uses, so `strategy-engine db migrate` and `supabase db push` agree on what is applied. Each
file runs in its own transaction with its history row, under a transaction-scoped advisory
lock so two migrators never race, waiting at most `LOCK_TIMEOUT` for a table lock: a file that
fails leaves nothing of itself and no record.

Whenever anything is pending, the preflight (the block between `-- preflight: begin` and
`-- preflight: end` that every file changing tables carries, copied from
infra/supabase/preflight.sql) runs first, alone, so a refusal leaves the database untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from strategy_engine.core.errors import DatabaseUnavailable, MigrationRefused
from strategy_engine.store.session import Session

MIGRATION_NAME = re.compile(r"^(\d{14})_(.+)\.sql$")
REFUSED = "SEM01"  # the SQLSTATE our preflight raises: data or a schema the engine cannot use
_LOCK_KEY = 7_316_204_519  # arbitrary, constant: serialises concurrent migrators
LOCK_TIMEOUT = "5s"  # the preflight sets the same for `supabase db push`
_PREFLIGHT = re.compile(r"^-- preflight: begin[^\n]*\n(.*?)^-- preflight: end$", re.M | re.S)


def default_dir() -> Path:
    """The migrations shipped with the package (a deployed bundle), else the repository's
    Supabase folder (a checkout). Raises MigrationRefused (exit 2) naming both places when
    neither exists: a package installed alone (`pip install .`) carries no migrations."""
    here = Path(__file__).resolve()
    places = (here.parents[1] / "migrations", here.parents[3] / "infra" / "supabase" / "migrations")
    for base in places:
        if base.is_dir():
            return base
    raise MigrationRefused(
        f"no migrations folder: looked in {places[0]} (a deployed bundle) and {places[1]} (a checkout);"
        " run this from a checkout of the repository or a bundle made by deploy.sh"
    )


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    path: Path


def discover(folder: Path) -> list[Migration]:
    found = []
    for path in sorted(folder.iterdir()):
        m = MIGRATION_NAME.match(path.name)
        if m:
            found.append(Migration(m.group(1), m.group(2), path))
    return found


def _ensure_history(s: Session) -> None:
    s.execute("create schema if not exists supabase_migrations")
    s.execute(
        "create table if not exists supabase_migrations.schema_migrations"
        " (version text primary key, statements text[], name text)"
    )
    # Older CLIs made the table with `version` only and add the columns later, as we do here.
    s.execute(
        "alter table supabase_migrations.schema_migrations"
        " add column if not exists statements text[], add column if not exists name text"
    )


def applied_versions(s: Session) -> set[str]:
    row = s.fetchone("select to_regclass('supabase_migrations.schema_migrations') is not null")
    if not row or not row[0]:
        return set()
    return {r[0] for r in s.fetchall("select version from supabase_migrations.schema_migrations")}


def preflight(mig: Migration) -> str | None:
    """The preflight block a migration file carries, or None (the roles file has none)."""
    m = _PREFLIGHT.search(mig.path.read_text(encoding="utf-8"))
    return m.group(1) if m else None


# SQLSTATE classes of an outage, not of the file: connection exception, insufficient resources,
# operator intervention (shutdown, cancel), system error.
_OUTAGE_CLASSES = frozenset({"08", "53", "57", "58"})


def refusal(
    mig: Migration, exc: psycopg.Error, applied: str = "nothing of it applied"
) -> MigrationRefused | DatabaseUnavailable:
    """One line for a person: which file, and the server's reason (ours says what to do).

    A lock wait that ran out, a deadlock or a serialization failure (SQLSTATE class 40), or a
    connection lost or a server out of resources or shutting down (the driver's own
    OperationalError, or SQLSTATE classes 08, 53, 57, 58: PostgreSQL manual, appendix A) is an
    outage (exit 3: the file rolled back whole, run it again later); anything else a refusal
    (exit 2: the file or the database needs a person).
    """
    # An error without words (no server message, empty text) is named by its type.
    diag = " ".join(
        (exc.diag.message_primary or (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__).split()
    )
    if isinstance(exc, psycopg.OperationalError) and (exc.sqlstate or "08")[:2] in _OUTAGE_CLASSES:
        return DatabaseUnavailable(
            f"migration {mig.path.name} stopped: the database went away while it ran, {applied};"
            f" run it again when the database is back ({diag})"
        )
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return DatabaseUnavailable(
            f"migration {mig.path.name} waited {LOCK_TIMEOUT} for a lock that another session holds on a"
            f" table it changes, {applied}; run it again when that session is done ({diag})"
        )
    if (exc.sqlstate or "")[:2] == "40":  # deadlock, serialization failure: another session's doing
        clash = "deadlocked" if exc.sqlstate == "40P01" else "conflicted"
        return DatabaseUnavailable(
            f"migration {mig.path.name} stopped: another session's locks and its own {clash},"
            f" {applied}; run it again ({diag})"
        )
    what = "refused" if exc.sqlstate == REFUSED else "failed"
    return MigrationRefused(f"migration {mig.path.name} {what}, {applied}: {diag}")


def _pending(s: Session, found: list[Migration]) -> list[Migration]:
    """The files not yet recorded, in version order."""
    done = applied_versions(s)
    return [m for m in found if m.version not in done]


def _run(s: Session, mig: Migration, text: str, applied: str) -> None:
    """Run a file's text inside the caller's transaction; its errors become `refusal`s.

    On the connection itself, not `Session.execute`: that reports every operational error
    (a lock timeout among them) as an outage without saying which file or what to do.
    """
    try:
        s.conn.execute(text)
    except psycopg.Error as exc:
        raise refusal(mig, exc, applied) from None


def migrate(s: Session, folder: Path | None = None) -> list[str]:
    """Apply what is pending; return the versions applied now (empty when up to date).

    Raises `MigrationRefused` (exit 2) naming the file and the reason: when the preflight
    refuses (nothing at all applied), or when a file cannot be applied (the files before it stay
    applied and recorded, that file and those after it do not); `DatabaseUnavailable` (exit 3)
    when a file waited `LOCK_TIMEOUT` for a table lock (rolled back whole: run it again).
    """
    folder = folder or default_dir()
    found = discover(folder)
    blocks = [b for m in found if (b := preflight(m)) is not None]
    first = next((m for m in _pending(s, found) if preflight(m) is not None), None)
    if first is not None:
        # The newest copy of the checks (the last file's), before anything is applied.
        block = blocks[-1]
        with s.transaction():
            s.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            _run(s, first, block, "nothing applied")
    done: list[str] = []
    for mig in found:
        try:
            with s.transaction():
                s.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                s.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
                _ensure_history(s)
                exists = s.fetchone(
                    "select 1 from supabase_migrations.schema_migrations where version = %s", (mig.version,)
                )
                if exists:
                    continue
                body = mig.path.read_text(encoding="utf-8")
                _run(s, mig, body, "nothing of it applied")
                s.execute(
                    "insert into supabase_migrations.schema_migrations (version, statements, name)"
                    " values (%s, %s, %s)",
                    (mig.version, [body], mig.name),
                )
        except psycopg.Error as exc:
            raise refusal(mig, exc) from None
        done.append(mig.version)
    return done
