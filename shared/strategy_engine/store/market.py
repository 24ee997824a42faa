"""Bars and options flow: the tick's constant-query snapshot reads and the backfill's bulk reads.

A flow event's premium is `notional`, else `size * trade_price * 100`, in integer cents, and
its direction is computed here in SQL for both paths, so the tick and the backfill sum the
same integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from strategy_engine.store.session import Session

# Premium in integer cents; NULL when neither notional nor size*price is known (ignored).
# Every column is cast (numeric, text) so that tables made elsewhere with double precision,
# varchar or enum columns give the same cents and directions as the engine's own.
FLOW_CENTS = (
    "round(coalesce(f.notional::numeric, f.size::numeric * f.trade_price::numeric * 100) * 100)::bigint"
)
# +1 bullish, -1 bearish: calls bought or puts sold are bullish; side 'unknown' follows the type
# (the product of the type's sign and the side's sign; anything unrecognised counts 0).
FLOW_DIRECTION = """
  (case lower(f.option_type::text) when 'call' then 1 when 'c' then 1 when 'put' then -1 when 'p' then -1
     else 0 end)
  * (case lower(coalesce(f.side::text, 'unknown')) when 'buy' then 1 when 'unknown' then 1
       when 'sell' then -1 else 0 end)"""


def recent_closes(
    s: Session, symbols: Sequence[str], minute: datetime, n: int
) -> dict[str, list[tuple[datetime, float]]]:
    """The last `n` bars (ts < T) per symbol, oldest first: one statement, N index scans."""
    rows = s.fetchall(
        """
        select sym.symbol, b.ts, b.close::float8
        from unnest(%(symbols)s::text[]) as sym(symbol)
        cross join lateral (
          select m.ts, m.close from public.market_data_1m m
          where m.symbol::text = sym.symbol and m.ts < %(t)s and m.close is not null
          order by m.ts desc limit %(n)s
        ) b
        order by sym.symbol, b.ts
        """,
        {"symbols": list(symbols), "t": minute, "n": n},
        binary=True,
    )
    out: dict[str, list[tuple[datetime, float]]] = {sym: [] for sym in symbols}
    for symbol, ts, close in rows:
        out[symbol].append((ts, close))
    return out


def flow_sums(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime
) -> dict[str, tuple[int, int]]:
    """(bullish cents, bearish cents) per underlying with start <= ts < end: one statement."""
    rows = s.fetchall(
        f"""
        select underlying::text,
               coalesce(sum(cents) filter (where dir > 0), 0)::bigint,
               coalesce(sum(cents) filter (where dir < 0), 0)::bigint
        from (
          select f.underlying, {FLOW_CENTS} as cents, {FLOW_DIRECTION} as dir
          from public.options_flow f
          where f.underlying::text = any(%(symbols)s) and f.ts >= %(start)s and f.ts < %(end)s
        ) x
        where cents is not null
        group by underlying
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def bars_range(s: Session, symbols: Sequence[str], start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """(symbol, ts, close) with start <= ts < end, ordered by symbol, ts: the backfill's bulk read."""
    return s.fetchall(
        """
        select m.symbol::text, m.ts, m.close::float8 from public.market_data_1m m
        where m.symbol::text = any(%(symbols)s) and m.ts >= %(start)s and m.ts < %(end)s
          and m.close is not null
        order by m.symbol, m.ts
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )


def flow_range(s: Session, symbols: Sequence[str], start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """(underlying, ts, signed cents) per event: +cents bullish, -cents bearish, ordered."""
    return s.fetchall(
        f"""
        select underlying::text, ts, (dir * cents)::bigint from (
          select f.underlying, f.ts, {FLOW_CENTS} as cents, {FLOW_DIRECTION} as dir
          from public.options_flow f
          where f.underlying::text = any(%(symbols)s) and f.ts >= %(start)s and f.ts < %(end)s
        ) x
        where cents is not null and dir <> 0
        order by underlying, ts
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )


def insert_bars(s: Session, rows: Sequence[tuple[Any, ...]]) -> int:
    """(symbol, ts, open, high, low, close, volume) rows, in one COPY."""
    return s.copy_in("market_data_1m", ("symbol", "ts", "open", "high", "low", "close", "volume"), rows)


def insert_flow(s: Session, rows: Sequence[tuple[Any, ...]]) -> int:
    """(ts, underlying, option_type, side, size, trade_price, notional) rows, in one COPY."""
    cols = ("ts", "underlying", "option_type", "side", "size", "trade_price", "notional")
    return s.copy_in("options_flow", cols, rows)
