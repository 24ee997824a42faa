"""The operator's reads: trades, decisions, one decision's risk checks, and what `status` marks.

Read-only SQL for the CLI's `trades`, `decisions`, `why` and `status`. Rows come back as dicts
keyed by column name (the JSON the commands print). Times are timestamptz (UTC datetimes);
money and quantities float8.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from strategy_engine.core.models import FINAL_ORDER_STATUSES
from strategy_engine.store.session import Session

# When an order happened: the minute a strategy decided it, else when it was sent (manual trades).
_ORDER_TIME = "coalesce(t.decision_minute, t.submitted_at, t.updated_at)"


def _dicts(s: Session, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = s.execute(query, params)
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def trades(
    s: Session,
    *,
    strategy: str | None = None,
    symbol: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Orders (strategy and manual), newest first: time, strategy, account, symbol, side, qty, ..."""
    return _dicts(
        s,
        f"""
        select {_ORDER_TIME} as time, d.name as strategy, a.name as account, t.source, t.symbol,
               t.side, t.qty::float8 as qty, t.status, t.filled_qty::float8 as filled_qty,
               t.filled_avg_price::float8 as price, t.client_order_id, t.error
        from public.paper_trades t
        left join public.strategy_definitions d on d.id = t.strategy_id
        left join public.broker_accounts a on a.id = t.account_id
        where (%(strategy)s::text is null or d.name = %(strategy)s)
          and (%(symbol)s::text is null or t.symbol = %(symbol)s)
          and (%(since)s::timestamptz is null or {_ORDER_TIME} >= %(since)s)
        order by {_ORDER_TIME} desc nulls last, t.id desc limit %(limit)s
        """,
        {"strategy": strategy, "symbol": symbol, "since": since, "limit": limit},
    )


def decisions(
    s: Session,
    *,
    strategy: str | None = None,
    symbol: str | None = None,
    since: datetime | None = None,
    outcome: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Live decisions, newest first: minute, strategy, symbol, action, qty, reason, outcome, risk_code."""
    return _dicts(
        s,
        """
        select l.decision_minute as minute, d.name as strategy, l.symbol, l.action, l.qty::float8 as qty,
               l.reason, l.outcome, l.risk_code
        from public.strategy_logs l join public.strategy_definitions d on d.id = l.strategy_id
        where l.run_mode = 'live'
          and (%(strategy)s::text is null or d.name = %(strategy)s)
          and (%(symbol)s::text is null or l.symbol = %(symbol)s)
          and (%(since)s::timestamptz is null or l.decision_minute >= %(since)s)
          and (%(outcome)s::text is null or l.outcome = %(outcome)s)
        order by l.decision_minute desc, d.name, l.symbol limit %(limit)s
        """,
        {"strategy": strategy, "symbol": symbol, "since": since, "outcome": outcome, "limit": limit},
    )


def decision(s: Session, strategy: str, symbol: str, minute: datetime | None) -> dict[str, Any] | None:
    """One live decision with its payload (signal inputs and risk checks): at `minute`, else the
    latest that proposed an order (buy or sell), else the latest hold."""
    rows = _dicts(
        s,
        """
        select l.decision_minute as minute, d.name as strategy, l.symbol, l.action, l.qty::float8 as qty,
               l.reason, l.outcome, l.risk_code, l.client_order_id, l.signal_payload as payload
        from public.strategy_logs l join public.strategy_definitions d on d.id = l.strategy_id
        where l.run_mode = 'live' and d.name = %(strategy)s and l.symbol = %(symbol)s
          and (%(minute)s::timestamptz is null or l.decision_minute = %(minute)s)
        order by (%(minute)s::timestamptz is null and l.action = 'hold'), l.decision_minute desc, l.id desc
        limit 1
        """,
        {"strategy": strategy, "symbol": symbol, "minute": minute},
    )
    return rows[0] if rows else None


def last_closes(s: Session, symbols: Sequence[str], before: datetime) -> dict[str, tuple[datetime, float]]:
    """symbol -> (ts, close) of its last bar with ts < `before` (one index probe per symbol)."""
    rows = s.fetchall(
        """
        select u.symbol, m.ts, m.close::float8
        from unnest(%s::text[]) as u(symbol)
        cross join lateral (
          select ts, close from public.market_data_1m
          where symbol = u.symbol and ts < %s and close is not null order by ts desc limit 1
        ) m
        """,
        (list(symbols), before),
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def fills_since(s: Session, since: datetime) -> list[tuple[str, str, float, float]]:
    """(account, symbol, net filled qty, net filled notional) of fills since `since`, buys positive."""
    rows = s.fetchall(
        f"""
        select a.name, t.symbol,
               sum(case when t.side = 'buy' then 1 else -1 end * t.filled_qty)::float8,
               sum(case when t.side = 'buy' then 1 else -1 end * t.filled_qty * t.filled_avg_price)::float8
        from public.paper_trades t join public.broker_accounts a on a.id = t.account_id
        where coalesce(t.filled_qty, 0) <> 0 and t.filled_avg_price is not null and {_ORDER_TIME} >= %s
        group by a.name, t.symbol order by a.name, t.symbol
        """,
        (since,),
    )
    return [(r[0], r[1], float(r[2]), float(r[3])) for r in rows]


def open_orders(s: Session) -> list[dict[str, Any]]:
    """Orders still working at the broker (as last mirrored), oldest first."""
    return _dicts(
        s,
        f"""
        select {_ORDER_TIME} as time, a.name as account, d.name as strategy, t.symbol, t.side,
               t.qty::float8 as qty, t.filled_qty::float8 as filled_qty, t.status, t.client_order_id
        from public.paper_trades t
        left join public.broker_accounts a on a.id = t.account_id
        left join public.strategy_definitions d on d.id = t.strategy_id
        where not (coalesce(t.status::text, '') = any(%(done)s))
        order by {_ORDER_TIME}, t.id
        """,
        {"done": sorted(FINAL_ORDER_STATUSES | {"void"})},  # not final: working, or an intent
    )


def strategy_accounts(s: Session) -> dict[str, str | None]:
    """strategy name -> its account's name."""
    rows = s.fetchall(
        "select d.name, a.name from public.strategy_definitions d"
        " left join public.broker_accounts a on a.id = d.account_id order by d.name"
    )
    return {r[0]: r[1] for r in rows}


def blocked_examples(s: Session, strategy_id: object, top: int = 3) -> list[dict[str, Any]]:
    """The `top` risk codes that blocked this strategy's live orders most, each with its count and
    its latest blocked decision (symbol, qty, payload)."""
    return _dicts(
        s,
        """
        select distinct on (l.risk_code) l.risk_code, c.n, l.symbol, l.qty::float8 as qty,
               l.decision_minute as minute, l.signal_payload as payload
        from public.strategy_logs l
        join (
          select risk_code, count(*)::int as n from public.strategy_logs
          where strategy_id = %(sid)s and run_mode = 'live' and outcome = 'blocked'
          group by risk_code order by count(*) desc, risk_code limit %(top)s
        ) c on c.risk_code = l.risk_code
        where l.strategy_id = %(sid)s and l.run_mode = 'live' and l.outcome = 'blocked'
        order by l.risk_code, l.decision_minute desc, l.symbol
        """,
        {"sid": strategy_id, "top": top},
    )


def try_session_lock(s: Session, name: str) -> bool:
    """A session-level advisory lock named `name` on this connection, held until it closes; False
    when another connection holds it. Only for a direct connection that lives as long as the work
    (the demo), never through the transaction pooler."""
    row = s.fetchone("select pg_try_advisory_lock(hashtext(%s))", (name,))
    return bool(row and row[0])
