"""The record of what happened: every decision and every order (the runs: `engine_runs`).

Decisions are written in one statement: a few as an INSERT the tick pipelines with the
minute's other writes, many (a tick of many symbols, the backfill) with COPY. Both read every
value through the column's own input function, so a table made elsewhere with other column
types stores the same values either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import abc
from psycopg.adapt import PyFormat, Transformer

from strategy_engine.core.decide import decision_json
from strategy_engine.core.models import Decision, Order, RowId, Side
from strategy_engine.store.session import Later, Session
from strategy_engine.store.values import exact

LOG_COLUMNS = (
    "engine_run_id",
    "backfill_run_id",
    "run_mode",
    "strategy_id",
    "decision_minute",
    "symbol",
    "action",
    "qty",
    "reason",
    "risk_code",
    "outcome",
    "client_order_id",
    "signal_payload",
)


def decision_row(d: Decision, strategy_id: RowId, *, engine_run_id: UUID) -> tuple[Any, ...]:
    """A tick's decision as a `strategy_logs` row in `LOG_COLUMNS` order (run_mode 'live'; the
    backfill writes its own rows as COPY text: `backtest.rows`)."""
    return (
        engine_run_id,
        None,
        "live",
        strategy_id,
        d.minute,
        d.signal.symbol,
        d.signal.action.value,
        d.signal.qty,
        d.signal.reason,
        d.verdict.code if d.verdict else None,
        d.outcome.value,
        d.intent.client_order_id if d.intent else None,
        decision_json(d),  # JSON text: COPY reads it into the jsonb column
    )


# At most this many decisions go as one INSERT, which can share the minute's pipelined writes;
# more go by COPY, a round trip of its own but cheaper per row (at 500 rows the INSERT's JSON
# cost 8 ms more in Python and 1.3 ms more in the server, measured with benchmarks/tick.py).
PIPELINED_DECISIONS = 64


def write_decisions(s: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    """`decision_row`s into `strategy_logs` in one statement, sent now; none when there are no
    rows. At most PIPELINED_DECISIONS rows: an INSERT (in the caller's pipeline, if any); more:
    a COPY (never inside a pipeline: `pipelined` says which).

    The INSERT's rows travel as one JSON array of objects, each value as the text COPY would
    send (the payload as the JSON it is), and `json_populate_recordset` reads each through its
    column's input function, as COPY does (json, not jsonb, so that a nested payload reaches a
    json or text column as the very text COPY would send): an existing table's varchar, enum,
    json or text columns store the same text either way."""
    if not pipelined(rows):
        s.copy_in("strategy_logs", LOG_COLUMNS, rows)
    elif rows:
        s.execute(_INSERT_LOGS, (_rows_json(rows, Transformer(s.conn)),))


def pipelined(rows: Sequence[tuple[Any, ...]]) -> bool:
    """Whether `write_decisions` of these rows may go in a pipeline (as the INSERT). Only payloads
    that are a JSON object or array (`decision_json`'s are objects), unpadded: the INSERT would
    store a JSON string's text unquoted, and no padding, in a text or json column."""
    return len(rows) <= PIPELINED_DECISIONS and all(
        r[-1] is None or (r[-1][:1], r[-1][-1:]) in (("{", "}"), ("[", "]")) for r in rows
    )


_INSERT_LOGS = f"""
insert into public.strategy_logs ({", ".join(LOG_COLUMNS)})
select {", ".join(LOG_COLUMNS)} from json_populate_recordset(null::public.strategy_logs, %s::json)
"""


def _rows_json(rows: Sequence[tuple[Any, ...]], tx: abc.Transformer) -> str:
    """`decision_row`s as a JSON array of objects: the scalars through one `json.dumps` per row
    (`_json_value`), the payload (JSON text) spliced in as it is."""
    out = []
    for row in rows:
        *scalars, payload = row
        values = (_json_value(v, tx) for v in scalars)
        head = json.dumps(dict(zip(LOG_COLUMNS, values, strict=False)))
        out.append(f'{head[:-1]}, "signal_payload": {"null" if payload is None else payload}}}')
    return "[" + ",".join(out) + "]"


def _json_value(v: Any, tx: abc.Transformer) -> Any:
    """One value as the very text COPY sends for it: psycopg's text dumper (`tx`'s), except
    for None, an int and a str, which json.dumps writes as they are."""
    kind = type(v)
    if v is None or kind is str or kind is int:
        return v
    text = tx.get_dumper(v, PyFormat.TEXT).dump(v)
    return None if text is None else bytes(text).decode()


def record_orders(
    s: Session,
    strategy_id: RowId | None,
    account_id: RowId,
    source: str,
    minute: datetime | None,
    orders: Iterable[tuple[Order, str | None]],
) -> None:
    """Upsert (order, error) pairs by client_order_id in one statement: a retry adopts, never doubles."""
    items = list(orders)
    if not items:
        return
    cols: dict[str, list[Any]] = {
        k: [] for k in ("cid", "bid", "sym", "side", "qty", "st", "fq", "fp", "at", "e")
    }
    for o, err in items:
        for key, val in zip(
            cols,
            (
                o.client_order_id,
                o.broker_order_id or None,
                o.symbol,
                o.side.value,
                exact(o.qty),
                o.status,
                exact(o.filled_qty),
                exact(o.filled_avg_price),
                o.submitted_at,
                err,
            ),
            strict=True,
        ):
            cols[key].append(val)
    s.execute(
        """
        insert into public.paper_trades (strategy_id, account_id, source, decision_minute, client_order_id,
          broker_order_id, symbol, side, qty, status, filled_qty, filled_avg_price, submitted_at, error,
          updated_at)
        select %(strategy)s, %(account)s, r.source, %(minute)s, u.cid, u.bid, u.sym, r.side, u.qty, r.status,
          u.fq, u.fp, u.at, u.e, now()
        from unnest(%(cid)s::text[], %(bid)s::text[], %(sym)s::text[], %(side)s::text[],
                    %(qty)s::numeric[], %(st)s::text[], %(fq)s::numeric[], %(fp)s::numeric[],
                    %(at)s::timestamptz[], %(e)s::text[])
          as u(cid, bid, sym, side, qty, st, fq, fp, at, e)
          -- the labels in the columns' own types (text, varchar or an existing table's enum)
          cross join lateral jsonb_populate_record(null::public.paper_trades,
            jsonb_build_object('source', %(source)s::text, 'side', u.side, 'status', u.st)) r
        on conflict (client_order_id) do update set broker_order_id = excluded.broker_order_id,
          status = excluded.status, filled_qty = excluded.filled_qty,
          filled_avg_price = excluded.filled_avg_price, error = excluded.error, updated_at = now(),
          submitted_at = coalesce(excluded.submitted_at, paper_trades.submitted_at)
        """,
        {"strategy": strategy_id, "account": account_id, "source": source, "minute": minute, **cols},
    )


def find_order(s: Session, client_order_id: str) -> Order | None:
    """The journal's order under this client id (None if absent, or `void`: never at the broker)."""
    row = s.fetchone(
        "select client_order_id, coalesce(broker_order_id, ''), symbol, side, qty::float8, status,"
        " coalesce(filled_qty, 0)::float8, filled_avg_price::float8, submitted_at"
        " from public.paper_trades where client_order_id = %s and coalesce(status::text, '') <> 'void'",
        (client_order_id,),
    )
    return None if row is None else Order(row[0], row[1], row[2], Side(row[3]), *row[4:])


def recent_manual(
    s: Session, account_id: RowId, symbol: str, side: str, qty: float, since: datetime
) -> tuple[str, str | None, datetime] | None:
    """(client id, status, minute) of the latest manual order of the same (account, symbol, side,
    qty) decided at or after `since` that may have reached the broker (not void or rejected)."""
    row = s.fetchone(
        "select client_order_id, status, decision_minute from public.paper_trades"
        " where source = 'manual' and account_id = %s and symbol = %s and side = %s and qty = %s"
        " and decision_minute >= %s and coalesce(status, '') not in ('void', 'rejected')"
        " order by decision_minute desc, client_order_id limit 1",
        (account_id, symbol, side, exact(qty), since),
    )
    return None if row is None else (row[0], row[1], row[2])


def last_trades(
    s: Session, strategy_id: RowId, symbols: Sequence[str], before: datetime
) -> dict[str, datetime]:
    """The decision minute of this strategy's last accepted order per symbol (for cool-down)."""
    return last_trades_later(s, strategy_id, symbols, before)()


def last_trades_later(
    s: Session, strategy_id: RowId, symbols: Sequence[str], before: datetime
) -> Later[dict[str, datetime]]:
    """`last_trades`, sent now (in the caller's pipeline, if any) and read when called.

    Per symbol, the index (strategy_id, symbol, decision_minute) read backwards to the first
    accepted order: the same plan for any number of symbols (a prepared statement's generic
    plan too), and a cost that does not grow with the strategy's history."""
    cur = s.execute(
        """
        select sym.symbol, t.minute from unnest(%s::text[]) as sym(symbol)
        cross join lateral (
          select p.decision_minute as minute from public.paper_trades p
          where p.strategy_id = %s and p.symbol = sym.symbol and p.decision_minute < %s
            and coalesce(p.status::text, '') not in ('rejected', 'failed', 'void')
          order by p.decision_minute desc limit 1
        ) t
        """,
        (list(symbols), strategy_id, before),
    )
    return lambda: {r[0]: r[1] for r in cur.fetchall()}


def decision_counts(s: Session, strategy_id: RowId) -> list[tuple[str, str, str | None, int]]:
    """(reason, outcome, risk_code, count) of a strategy's live decisions."""
    rows = s.fetchall(
        """
        select reason, outcome, risk_code, count(*)::int from public.strategy_logs
        where strategy_id = %s and run_mode = 'live'
        group by reason, outcome, risk_code order by reason, outcome, risk_code
        """,
        (strategy_id,),
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def reset_database(s: Session, dbname: str, template: str | None = None) -> None:
    """Drop and create a database on the same server (the demo starts clean every time), as a
    copy of `template` if given (no one may be connected to it)."""
    from psycopg import sql

    s.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
    copy = sql.SQL(" template {}").format(sql.Identifier(template)) if template else sql.SQL("")
    s.execute(sql.SQL("create database {}{}").format(sql.Identifier(dbname), copy))
