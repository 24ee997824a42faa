"""Backfill SQL: the range read in bulk, backfill runs, and decisions written as COPY text.

A year of one symbol's minutes comes back as one row: the timestamps and closes are packed
server-side with the binary send functions (big-endian int8 microseconds since 2000-01-01, and
float8) into one bytea per column, which numpy reads without a Python object per bar. Per-row
decoding is what makes a plain SELECT or COPY OUT of millions of rows slow from Python.

Flow premium and direction come from the same SQL as the tick's `flow_sums`
(`market.scored_flow`), so both paths add the same integer cents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Jsonb

from strategy_engine.core.data_quality import finite
from strategy_engine.core.models import RowId
from strategy_engine.store.driver_errors import unavailable
from strategy_engine.store.journal import LOG_COLUMNS
from strategy_engine.store.market import (
    BAD_BAR,
    EX_TIME,
    FLOW_IGNORED,
    FLOW_IN_WINDOW,
    GOOD_BAR,
    SPLITS,
    clamped_sum,
    scored_flow,
)
from strategy_engine.store.session import Session, copy_from_stdin

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00Z in Unix microseconds: timestamptz_send's origin
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _ints(blob: bytes | None) -> IntArray:
    return np.frombuffer(blob or b"", dtype=">i8").astype(np.int64)


def _times(blob: bytes | None) -> IntArray:
    return _ints(blob) + PG_EPOCH_US


@dataclass(frozen=True)
class BarArrays:
    """One symbol's bars from its warm-up on: good bars (ts in Unix µs, close), bad bar times, splits."""

    ts: IntArray
    close: FloatArray
    bad_ts: IntArray
    splits: tuple[tuple[int, float], ...]  # (ex time in Unix µs, ratio), ascending


def bars_arrays(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime, window: int
) -> dict[str, BarArrays]:
    """Per symbol, every bar from the oldest of the last `window` good bars before `start` (all
    history when there are fewer) up to `end`, split by the data-quality rule: one statement."""
    rows = s.fetchall(
        f"""
        select sym.symbol,
               string_agg(case when {GOOD_BAR} then timestamptz_send(m.ts) end, ''::bytea order by m.ts),
               string_agg(case when {GOOD_BAR} then float8send(m.close::float8) end, ''::bytea order by m.ts),
               string_agg(case when {BAD_BAR} then timestamptz_send(m.ts) end, ''::bytea order by m.ts),
               c.ex, c.ratio
        from unnest(%(symbols)s::text[]) as sym(symbol)
        cross join lateral (
          select case when count(*) < %(n)s then '-infinity'::timestamptz else min(w.ts) end as lo
          from (
            select m.ts from public.market_data_1m m
            where m.symbol::text = sym.symbol and m.ts < %(start)s and {GOOD_BAR}
            order by m.ts desc limit %(n)s
          ) w
        ) l
        cross join lateral ({SPLITS} and {EX_TIME} < %(end)s) c
        left join public.market_data_1m m on m.symbol::text = sym.symbol and m.ts >= l.lo and m.ts < %(end)s
        group by sym.symbol, c.ex, c.ratio
        """,
        {"symbols": list(symbols), "start": start, "end": end, "n": window},
    )
    return {
        r[0]: BarArrays(
            _times(r[1]),
            np.frombuffer(r[2] or b"", dtype=">f8").astype(np.float64),
            _times(r[3]),
            tuple((_us(ex), float(ratio)) for ex, ratio in zip(r[4] or [], r[5] or [], strict=True)),
        )
        for r in rows
    }


def _us(t: datetime) -> int:
    d = t - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def flow_arrays(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime
) -> dict[str, tuple[IntArray, IntArray, IntArray, IntArray]]:
    """(ts in Unix µs, bullish cents, bearish cents, ignored events) per underlying and distinct
    ts: one statement. Cents per ts are clamped like the tick's sums (`market.clamped_sum`)."""
    rows = s.fetchall(
        f"""
        select underlying::text,
               string_agg(timestamptz_send(ts), ''::bytea order by ts),
               string_agg(int8send(bull), ''::bytea order by ts),
               string_agg(int8send(bear), ''::bytea order by ts),
               string_agg(int8send(ignored), ''::bytea order by ts)
        from (
          select underlying, ts, {clamped_sum("dir > 0")} as bull, {clamped_sum("dir < 0")} as bear,
                 count(*) filter (where {FLOW_IGNORED})::bigint as ignored
          from ({scored_flow(FLOW_IN_WINDOW)}) x
          group by underlying, ts
        ) per_ts
        group by underlying
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )
    return {r[0]: (_times(r[1]), _ints(r[2]), _ints(r[3]), _ints(r[4])) for r in rows}


def insert_run(
    s: Session,
    run_id: UUID,
    strategy_id: RowId,
    strategy_name: str,
    start: datetime,
    end: datetime,
    parameters: dict[str, Any],
    config_hash: str,
    summary: dict[str, Any],
    status: str = "done",
) -> None:
    s.execute(
        """
        insert into public.backfill_runs (id, strategy_id, strategy_name, range_start, range_end,
          parameters, config_hash, summary, status, finished_at)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
        """,
        (
            run_id,
            strategy_id,
            strategy_name,
            start,
            end,
            Jsonb(finite(parameters)),
            config_hash,
            Jsonb(finite(summary)),
            status,
        ),
    )


def set_report(s: Session, run_id: UUID, report_path: str | None, note: dict[str, Any]) -> None:
    """Record where the report is (a Storage key or a local path) and any note about it."""
    s.execute(
        "update public.backfill_runs set report_path = %s, summary = summary || %s where id = %s",
        (report_path, Jsonb(finite(note)), run_id),
    )


def copy_escape(text: str) -> str:
    """A value in COPY's text format: backslash, tab, newline and carriage return escaped."""
    return text.translate(_COPY_ESCAPES)


def copy_text(
    s: Session, table: str, columns: Sequence[str], chunks: Iterable[str | bytes], *, schema: str = "public"
) -> int:
    """COPY pre-formatted text lines into `<schema>.<table>` in one statement (`Session.copy_in`'s
    rule for the schema); returns the length sent
    (characters of text chunks, bytes of bytes chunks).

    The bulk writer of the backfill: lines are built in batches and handed to a writer thread
    (`QueuedLibpqWriter`), so the server parses one batch while the next is formatted, with no
    per-row driver call.
    """
    s.statements += 1
    stmt = copy_from_stdin(table, columns, schema)
    sent = 0
    try:
        with s.conn.cursor() as cur, cur.copy(stmt, writer=QueuedLibpqWriter(cur)) as cp:
            for chunk in chunks:
                cp.write(chunk)
                sent += len(chunk)
    except psycopg.OperationalError as exc:
        raise unavailable(exc) from None
    return sent


def write_decision_text(s: Session, chunks: Iterable[str]) -> int:
    """strategy_logs rows in `journal.LOG_COLUMNS` order, as COPY text lines."""
    return copy_text(s, "strategy_logs", LOG_COLUMNS, chunks)


def copy_out_range(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime, flow_start: datetime
) -> int:
    """COPY OUT (binary) the bars and flow events a backfill of the range reads; returns bytes.

    No engine path uses this: it is the plain-COPY floor the backfill benchmark compares with.
    """
    queries = (
        sql.SQL(
            "copy (select m.symbol::text, m.ts, m.close::float8 from public.market_data_1m m"
            " where m.symbol::text = any({s}) and m.ts >= {a} and m.ts < {b} and "
            + GOOD_BAR
            + " order by m.symbol, m.ts) to stdout (format binary)"
        ),
        sql.SQL(
            "copy (select x.underlying::text, x.ts, x.cents, x.dir from ("
            + scored_flow("f.underlying::text = any({s}) and f.ts >= {fa} and f.ts < {b}")
            + ") x order by x.underlying, x.ts) to stdout (format binary)"
        ),
    )
    got = 0
    try:
        with s.conn.cursor() as cur:
            for q in queries:
                s.statements += 1
                stmt = q.format(
                    s=sql.Literal(list(symbols)),
                    a=sql.Literal(start),
                    b=sql.Literal(end),
                    fa=sql.Literal(flow_start),
                )
                with cur.copy(stmt) as cp:
                    for block in cp:
                        got += len(block)
    except psycopg.OperationalError as exc:
        raise unavailable(exc) from None
    return got


def list_runs(s: Session, strategy: str | None, limit: int) -> list[dict[str, Any]]:
    """Backfill runs, newest first, with how many journal rows each holds."""
    cur = s.execute(
        """
        select r.id, r.created_at, r.strategy_name as strategy, r.status, r.range_start, r.range_end,
               (r.summary->>'total_pnl')::float8 as total_pnl, (r.summary->>'orders')::int as orders,
               (select count(*) from public.strategy_logs l where l.backfill_run_id = r.id)::int
                 as journal_rows,
               r.report_path
        from public.backfill_runs r
        where %(strategy)s::text is null or r.strategy_name = %(strategy)s
        order by r.created_at desc, r.id limit %(limit)s
        """,
        {"strategy": strategy, "limit": limit},
    )
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def prune_runs(s: Session, before: datetime, *, dry_run: bool = False) -> tuple[int, int]:
    """Delete the backfill runs created before `before` and their journal rows, in one
    transaction; (runs, decisions) removed, or with `dry_run` that would be (nothing deleted)."""
    with s.transaction():
        row = s.fetchone(
            "select (select count(*)::int from public.backfill_runs where created_at < %(t)s),"
            " (select count(*)::int from public.strategy_logs l join public.backfill_runs r"
            " on r.id = l.backfill_run_id where r.created_at < %(t)s)",
            {"t": before},
        )
        runs, rows = (int(row[0]), int(row[1])) if row else (0, 0)
        if not dry_run:
            s.execute(
                "delete from public.strategy_logs where backfill_run_id in"
                " (select id from public.backfill_runs where created_at < %s)",
                (before,),
            )
            runs = s.execute("delete from public.backfill_runs where created_at < %s", (before,)).rowcount
    return runs, rows
