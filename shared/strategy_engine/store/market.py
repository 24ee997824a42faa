"""Bars and options flow: the tick's constant-query snapshot reads, and the SQL both paths share.

A flow event's premium is `notional`, else `size * trade_price * 100`, in integer cents, and
its direction is computed here in SQL for both paths, so the tick and the backfill sum the
same integers. Which bars and events count is `core.data_quality`'s rule, written here once as
SQL (`GOOD_BAR`, `FLOW_CENTS`, `scored_flow`) and used by the tick's and the backfill's
statements alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from strategy_engine.core import data_quality as dq
from strategy_engine.core.data_quality import Window
from strategy_engine.store.session import Later, Session


def _sql_spelling(column: str) -> str:
    """`data_quality.spelling` in SQL: btrim of the same BLANKS, the same ASCII-only fold."""
    blanks = "".join(f"\\u{ord(c):04x}" for c in dq.BLANKS)
    return f"translate(btrim({column}::text, E'{blanks}'), '{dq.FOLD_FROM}', '{dq.FOLD_TO}')"


def _sql_map(column: str, mapping: Mapping[str, str], default: str) -> str:
    """A SQL CASE mapping `column` through one of data_quality's spelling maps, as
    `mapping.get(spelling(column), default)`. A value already in canonical spelling (every key
    is one, `spelling(k) == k`) is matched as it is; only another spelling pays for the fold
    (btrim and translate on every row were most of the flow query's time at 500 symbols).
    Compared byte for byte (`collate "C"`), as Python compares: under a column's accent- or
    case-insensitive collation 'Çall' would otherwise read as 'call'."""
    arms = " ".join(f"when '{k}' then '{v}'" for k, v in mapping.items())
    raw, folded = f'({column}::text collate "C")', f'({_sql_spelling(column)} collate "C")'
    return f"(case {raw} {arms} else (case {folded} {arms} else {default} end) end)"


def _sql_direction(kind: str, side: str) -> str:
    """+1 bullish, -1 bearish, 0 otherwise, from the canonical `kind` and `side` columns:
    `DIRECTIONS` as nested CASEs, so each column is compared, never recomputed (a CASE over the
    pair (kind, side) repeats both expressions in every arm)."""
    by_kind: dict[str, list[tuple[str, int]]] = {}
    for (k, sd), d in dq.DIRECTIONS.items():
        by_kind.setdefault(k, []).append((sd, d))
    arms = " ".join(
        f"when '{k}' then (case {side} " + " ".join(f"when '{sd}' then {d}" for sd, d in v) + " else 0 end)"
        for k, v in by_kind.items()
    )
    return f"(case {kind} {arms} else 0 end)"


def _bounded(column: str, bound: int) -> str:
    # numeric NaN sorts above every number and Infinity, so `<= bound` refuses both.
    return f"({column} is null or ({column}::numeric >= 0 and {column}::numeric <= {bound}))"


# A bar counts when its close is positive and finite (and at most MAX_PRICE) and so is each of
# open, high and low that is present (close-only feeds leave them null); any other bar is a
# missing bar, in the tick and the backfill alike. NaN sorts above every number in numeric.
GOOD_BAR = " and ".join(
    [f"m.close > 0 and m.close <= {dq.MAX_PRICE}"]
    + [f"(m.{c} is null or (m.{c} > 0 and m.{c} <= {dq.MAX_PRICE}))" for c in ("open", "high", "low")]
)
BAD_BAR = f"({GOOD_BAR}) is not true"
# Every column is cast (numeric, text) so that tables made elsewhere with double precision,
# varchar or enum columns give the same cents and directions as the engine's own.
_PREMIUM = "coalesce(f.notional::numeric, f.size::numeric * f.trade_price::numeric * 100)"
# Premium in integer cents; NULL for an ignored event: a bad size, price or notional, an unknown
# premium (neither notional nor size * price), or one above MAX_PREMIUM dollars.
FLOW_CENTS = (
    f"(case when {_bounded('f.size', 2**31)} and {_bounded('f.trade_price', dq.MAX_OPTION_PRICE)}"
    f" and {_bounded('f.notional', dq.MAX_PREMIUM)} and {_PREMIUM} <= {dq.MAX_PREMIUM}"
    f" then round({_PREMIUM} * 100)::bigint end)"
)


@cache  # a few fixed `where`s: the text is built once per process, not on every tick
def scored_flow(where: str) -> str:
    """A subquery of the options_flow events `where` selects (the table's alias is `f`), one row
    per event: underlying, ts, `cents` (NULL for an ignored premium, `FLOW_CENTS`) and `dir`
    (+1 bullish, -1 bearish, 0 for an option type no vendor table knows: ignored). The tick's
    and the backfill's flow statements all read it. `offset 0` keeps the inner select from
    being merged into the outer one, so each event's kind and side are computed once."""
    kind = _sql_map("f.option_type", dq.OPTION_TYPES, "null")
    side = _sql_map("f.side", dq.SIDES, "'unknown'")
    return f"""
      select e.underlying, e.ts, e.cents, {_sql_direction("e.kind", "e.side")} as dir
      from (
        select f.underlying, f.ts, {FLOW_CENTS} as cents, {kind} as kind, {side} as side
        from public.options_flow f
        where {where}
        offset 0
      ) e"""


# The events of `symbols` in [start, end): the tick's and the backfill's flow statements.
FLOW_IN_WINDOW = "f.underlying::text = any(%(symbols)s) and f.ts >= %(start)s and f.ts < %(end)s"
# A split's ex time: midnight in New York of its ex date (bars before it are pre-split prices).
EX_TIME = "(a.ex_date::timestamp at time zone 'America/New_York')"
# (ex times, ratios) of one symbol's splits, ascending; the caller adds a bound on EX_TIME.
SPLITS = (
    f"select array_agg({EX_TIME} order by a.ex_date) as ex,"
    " array_agg(a.split_ratio::float8 order by a.ex_date) as ratio"
    " from public.corporate_actions a where a.symbol = sym.symbol"
)
# Whether an event is ignored, and a clamped sum: both over the columns `cents` and `dir`.
FLOW_IGNORED = "(cents is null or dir = 0)"


def clamped_sum(condition: str) -> str:
    """The sum of `cents` where `condition`, in numeric, clamped at MAX_SUM_CENTS: never overflows."""
    return f"least(coalesce(sum(cents) filter (where {condition}), 0), {dq.MAX_SUM_CENTS})::bigint"


def recent_closes(
    s: Session, symbols: Sequence[str], minute: datetime, n: int, splits_until: datetime | None = None
) -> dict[str, Window]:
    """The last `n` good bars (ts < T) per symbol, the bad bars among them, known splits (ex time
    <= `splits_until`, default T: an order that fills later meets the splits before then): one
    statement."""
    return recent_closes_later(s, symbols, minute, n, splits_until)()


def recent_closes_later(
    s: Session, symbols: Sequence[str], minute: datetime, n: int, splits_until: datetime | None = None
) -> Later[dict[str, Window]]:
    """`recent_closes`, sent now (in the caller's pipeline, if any) and read when called.

    The bad bars are counted as every bar in [oldest loaded, T) less the good ones loaded: exact,
    as (symbol, ts) is unique (20260101000600_unique_keys), and an index scan with no filter to
    evaluate instead of a second pass of the bad-bar test."""
    cur = s.execute(
        f"""
        select sym.symbol, g.closes, g.last,
          (select count(*) from public.market_data_1m m
           where m.symbol::text = sym.symbol and m.ts < %(t)s
             and m.ts >= (case when g.n < %(n)s then '-infinity' else g.oldest end)) - g.n,
          c.ex, c.ratio, case when c.ex is not null then g.ts end
        from unnest(%(symbols)s::text[]) as sym(symbol)
        cross join lateral (
          select array_agg(b.ts order by b.ts desc) as ts, array_agg(b.close order by b.ts desc) as closes,
                 min(b.ts) as oldest, max(b.ts) as last, count(*) as n
          from (
            select m.ts, m.close::float8 as close from public.market_data_1m m
            where m.symbol::text = sym.symbol and m.ts < %(t)s and {GOOD_BAR}
            order by m.ts desc limit %(n)s
          ) b
        ) g
        cross join lateral ({SPLITS} and {EX_TIME} <= %(until)s) c
        """,
        {"symbols": list(symbols), "t": minute, "n": n, "until": splits_until or minute},
        binary=True,  # arrays of timestamps and floats: binary decodes them without parsing text
    )

    def answer() -> dict[str, Window]:
        out = {sym: Window([], None, 0, [], []) for sym in symbols}
        for symbol, closes, last, ignored, ex, ratios, times in cur.fetchall():
            splits = list(zip(ex or [], ratios or [], strict=True))
            out[symbol] = Window((closes or [])[::-1], last, int(ignored), splits, (times or [])[::-1])
        return out

    return answer


def flow_sums(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime
) -> dict[str, tuple[int, int, int]]:
    """(bullish cents, bearish cents, ignored events) per underlying, start <= ts < end: one statement."""
    return flow_sums_later(s, symbols, start, end)()


def flow_sums_later(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime
) -> Later[dict[str, tuple[int, int, int]]]:
    """`flow_sums`, sent now (in the caller's pipeline, if any) and read when called."""
    cur = s.execute(
        f"""
        select underlying::text, {clamped_sum("dir > 0")}, {clamped_sum("dir < 0")},
               count(*) filter (where {FLOW_IGNORED})
        from ({scored_flow(FLOW_IN_WINDOW)}) x
        group by underlying
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )
    return lambda: {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in cur.fetchall()}


def insert_bars(s: Session, rows: Sequence[tuple[Any, ...]]) -> int:
    """(symbol, ts, open, high, low, close, volume) rows, in one COPY."""
    return s.copy_in("market_data_1m", ("symbol", "ts", "open", "high", "low", "close", "volume"), rows)


def insert_flow(s: Session, rows: Sequence[tuple[Any, ...]]) -> int:
    """(ts, underlying, option_type, side, size, trade_price, notional) rows, in one COPY."""
    cols = ("ts", "underlying", "option_type", "side", "size", "trade_price", "notional")
    return s.copy_in("options_flow", cols, rows)
