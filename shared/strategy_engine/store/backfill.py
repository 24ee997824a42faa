"""Backfill SQL: the range read in bulk, backfill runs, and decisions written as COPY text.

A year of one symbol's minutes comes back as one row: the timestamps and closes are packed
server-side with the binary send functions (big-endian int8 microseconds since 2000-01-01, and
float8) into one bytea per column, which numpy reads without a Python object per bar. Per-row
decoding is what makes a plain SELECT or COPY OUT of millions of rows slow from Python.

Flow premium and direction come from the same SQL expressions as the tick's `flow_sums`
(`market.FLOW_CENTS`, `market.FLOW_DIRECTION`), so both paths add the same integer cents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Jsonb

from strategy_engine.core.models import RowId
from strategy_engine.store.journal import LOG_COLUMNS
from strategy_engine.store.market import FLOW_CENTS, FLOW_DIRECTION
from strategy_engine.store.session import Session, unavailable

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00Z in Unix microseconds: timestamptz_send's origin
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _ints(blob: bytes | None) -> IntArray:
    return np.frombuffer(blob or b"", dtype=">i8").astype(np.int64)


def _times(blob: bytes | None) -> IntArray:
    return _ints(blob) + PG_EPOCH_US


def bars_arrays(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime
) -> dict[str, tuple[IntArray, FloatArray]]:
    """(ts in Unix µs, close) per symbol for start <= ts < end, ascending: one statement."""
    rows = s.fetchall(
        """
        select m.symbol::text,
               string_agg(timestamptz_send(m.ts), ''::bytea order by m.ts),
               string_agg(float8send(m.close::float8), ''::bytea order by m.ts)
        from public.market_data_1m m
        where m.symbol::text = any(%(symbols)s) and m.ts >= %(start)s and m.ts < %(end)s
          and m.close is not null
        group by m.symbol
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )
    return {r[0]: (_times(r[1]), np.frombuffer(r[2] or b"", dtype=">f8").astype(np.float64)) for r in rows}


def flow_arrays(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime
) -> dict[str, tuple[IntArray, IntArray, IntArray]]:
    """(ts in Unix µs, bullish cents, bearish cents) per underlying and distinct ts: one statement."""
    rows = s.fetchall(
        f"""
        select underlying::text,
               string_agg(timestamptz_send(ts), ''::bytea order by ts),
               string_agg(int8send(bull), ''::bytea order by ts),
               string_agg(int8send(bear), ''::bytea order by ts)
        from (
          select underlying, ts,
                 coalesce(sum(cents) filter (where dir > 0), 0)::bigint as bull,
                 coalesce(sum(cents) filter (where dir < 0), 0)::bigint as bear
          from (
            select f.underlying, f.ts, {FLOW_CENTS} as cents, {FLOW_DIRECTION} as dir
            from public.options_flow f
            where f.underlying::text = any(%(symbols)s) and f.ts >= %(start)s and f.ts < %(end)s
          ) x
          where cents is not null
          group by underlying, ts
        ) per_ts
        group by underlying
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )
    return {r[0]: (_times(r[1]), _ints(r[2]), _ints(r[3])) for r in rows}


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
            Jsonb(parameters),
            config_hash,
            Jsonb(summary),
            status,
        ),
    )


def set_report(s: Session, run_id: UUID, report_path: str | None, note: dict[str, Any]) -> None:
    """Record where the report is (a Storage key or a local path) and any note about it."""
    s.execute(
        "update public.backfill_runs set report_path = %s, summary = summary || %s where id = %s",
        (report_path, Jsonb(note), run_id),
    )


def copy_escape(text: str) -> str:
    """A value in COPY's text format: backslash, tab, newline and carriage return escaped."""
    return text.translate(_COPY_ESCAPES)


def copy_text(s: Session, table: str, columns: Sequence[str], chunks: Iterable[str | bytes]) -> int:
    """COPY pre-formatted text lines into a table in one statement; returns the bytes sent.

    The bulk writer of the backfill: lines are built in batches and handed to a writer thread
    (`QueuedLibpqWriter`), so the server parses one batch while the next is formatted, with no
    per-row driver call.
    """
    s.statements += 1
    stmt = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
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
            "copy (select symbol::text, ts, close::float8 from public.market_data_1m"
            " where symbol::text = any({s}) and ts >= {a} and ts < {b} and close is not null"
            " order by symbol, ts) to stdout (format binary)"
        ),
        sql.SQL(
            "copy (select f.underlying::text, f.ts, "
            + FLOW_CENTS
            + ", "
            + FLOW_DIRECTION.replace("\n", " ")
            + " from public.options_flow f"
            " where f.underlying::text = any({s}) and f.ts >= {fa} and f.ts < {b}"
            " order by f.underlying, f.ts) to stdout (format binary)"
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
