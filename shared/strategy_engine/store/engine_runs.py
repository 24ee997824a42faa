"""`engine_runs`: one row per invocation, started, closed, closed late, or abandoned by a dead
process (closed by the next run).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from strategy_engine.core.data_quality import finite
from strategy_engine.store.session import Later, Session


def relax_commit(s: Session) -> None:
    """Let the implicit transaction this statement begins COMMIT without waiting for its WAL to
    reach disk (`set_config('synchronous_commit', 'off', true)`: this transaction only, so safe
    through a transaction pooler). For the run's bookkeeping alone (`engine_runs`, the day rows):
    every strategy-minute and every intent still commits synchronously, and a synchronous commit
    flushes the WAL before it, these writes included (PostgreSQL docs, "Asynchronous Commit"). A
    server crash before the next flush (at most 3 x `wal_writer_delay`, 0.6 s by default) can lose
    them: a run then shows `running` and the next run closes it `abandoned`; lost day rows are made
    again. A no-op inside a caller's transaction, whose COMMIT it must not relax. One statement,
    pipelined with the caller's if it has one."""
    if s.idle:
        s.execute("select set_config('synchronous_commit', 'off', true)")


def start_run(s: Session, run_id: UUID, trigger: str, minute: datetime) -> None:
    s.execute(
        "insert into public.engine_runs (id, trigger, minute, status) values (%s, %s, %s, 'running')",
        (run_id, trigger, minute),
    )


def close_abandoned(s: Session, older_than_seconds: float, by: UUID) -> Later[list[UUID]]:
    """Close runs still `running` after the function's timeout: their process is dead. One
    statement, sent now (in the caller's pipeline, if any); the answer gives the ids closed."""
    cur = s.execute(
        """
        update public.engine_runs set status = 'abandoned', finished_at = now(),
          detail = jsonb_build_object('closed_by', %s::text, 'reason', 'running past the function timeout')
        where status = 'running' and started_at < now() - make_interval(secs => %s)
        returning id
        """,
        (str(by), older_than_seconds),
    )
    return lambda: [r[0] for r in cur.fetchall()]


def finish_run(s: Session, run_id: UUID, status: str, counts: dict[str, int], detail: Any, ms: float) -> bool:
    """Close a run `running`; False when a later run has closed it as `abandoned` meanwhile (this
    process outlived the timeout): the row keeps `abandoned`, and this finish goes into its detail
    as `late_finish` (status, counts, duration, time). One round trip, committed
    asynchronously (`relax_commit`)."""
    with s.pipeline():
        relax_commit(s)
        cur = s.execute(
            """
            with done as (
              update public.engine_runs set status = %(status)s, strategies = %(strategies)s,
                decisions = %(decisions)s, orders = %(orders)s, blocked = %(blocked)s, failed = %(failed)s,
                detail = %(detail)s, finished_at = now(), duration_ms = %(ms)s
              where id = %(id)s and status = 'running'
              returning id
            ), late as (
              update public.engine_runs set detail = coalesce(detail, '{}'::jsonb) || jsonb_build_object(
                'late_finish', jsonb_build_object('status', %(status)s::text, 'counts', %(counts)s::jsonb,
                  'duration_ms', %(ms)s::float8, 'finished_at', now(), 'detail', %(detail)s::jsonb))
              where id = %(id)s and status <> 'running' and not exists (select 1 from done)
              returning id
            )
            select exists (select 1 from done)
            """,
            {
                "status": status,
                **{k: counts.get(k, 0) for k in ("strategies", "decisions", "orders", "blocked", "failed")},
                "counts": Jsonb(counts),
                "detail": Jsonb(finite(detail)),
                "ms": ms,
                "id": run_id,
            },
        )
    row = cur.fetchone()
    return bool(row and row[0])


def recent_runs(s: Session, limit: int = 10) -> list[tuple[Any, ...]]:
    return s.fetchall(
        "select id, trigger, minute, status, strategies, decisions, orders, blocked, failed, duration_ms"
        " from public.engine_runs order by started_at desc limit %s",
        (limit,),
    )
