"""Applies `infra/supabase/migrations/<version>_<name>.sql` in version order, once each.

History goes in `supabase_migrations.schema_migrations`, the table the Supabase CLI itself
uses, so `strategy-engine db migrate` and `supabase db push` agree on what is applied. Each
file runs in its own transaction with its history row, under a transaction-scoped advisory
lock so two migrators never race: a file that fails leaves nothing of itself and no record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from strategy_engine.core.errors import MigrationRefused
from strategy_engine.store.session import Session

MIGRATION_NAME = re.compile(r"^(\d{14})_(.+)\.sql$")
REFUSED = "SEM01"  # the SQLSTATE our preflight raises: data or a schema the engine cannot use
_LOCK_KEY = 7_316_204_519  # arbitrary, constant: serialises concurrent migrators


def default_dir() -> Path:
    """The migrations shipped with the package, else the repository's Supabase folder."""
    here = Path(__file__).resolve()
    for base in (here.parents[1] / "migrations", here.parents[3] / "infra" / "supabase" / "migrations"):
        if base.is_dir():
            return base
    raise FileNotFoundError("migrations folder not found")


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


def applied_versions(s: Session) -> set[str]:
    row = s.fetchone("select to_regclass('supabase_migrations.schema_migrations') is not null")
    if not row or not row[0]:
        return set()
    return {r[0] for r in s.fetchall("select version from supabase_migrations.schema_migrations")}


def refusal(mig: Migration, exc: psycopg.Error) -> MigrationRefused:
    """One line for a person: which file, and the server's reason (ours says what to do)."""
    diag = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    what = "refused" if exc.sqlstate == REFUSED else "failed"
    return MigrationRefused(
        f"migration {mig.path.name} {what}, nothing of it applied: {' '.join(diag.split())}"
    )


def migrate(s: Session, folder: Path | None = None) -> list[str]:
    """Apply what is pending; return the versions applied now (empty when up to date).

    Raises `MigrationRefused` (exit 2) naming the file and the reason when a file cannot be
    applied; the files before it stay applied and recorded, that file and those after it do not.
    """
    folder = folder or default_dir()
    done: list[str] = []
    for mig in discover(folder):
        try:
            with s.transaction():
                s.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                _ensure_history(s)
                exists = s.fetchone(
                    "select 1 from supabase_migrations.schema_migrations where version = %s", (mig.version,)
                )
                if exists:
                    continue
                body = mig.path.read_text(encoding="utf-8")
                s.execute(body)
                s.execute(
                    "insert into supabase_migrations.schema_migrations (version, statements, name)"
                    " values (%s, %s, %s)",
                    (mig.version, [body], mig.name),
                )
        except psycopg.Error as exc:
            raise refusal(mig, exc) from None
        done.append(mig.version)
    return done
