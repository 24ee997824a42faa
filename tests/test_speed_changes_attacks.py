"""Attacks on three speed changes, each case against the old code (copied here) or an
independent computation:

1. 39987aa, `store.market.scored_flow`: canonical spellings matched before the fold, kind and
   side computed once in a fenced subquery, nested CASEs. Compared with the old
   `FLOW_DIRECTION` (a CASE over the pair) and with `core.data_quality`'s Python rule.
2. cc1aa4d, `core.decide.decision_json` (JSON text, `allow_nan=False`, `finite` only on
   ValueError) against the old `Jsonb(finite(payload))`, on a real database; the inlined break
   rule of `after_last_break` and `usable_closes` without split factors against the old ones.
3. 5dc9fca, `brokers.alpaca_http.environment_once`: proxies and CA bundle read once, against a
   plain `requests.Session` (trust_env) asked per request.
"""

from __future__ import annotations

import itertools
import logging
import math
import socket
import traceback
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import psycopg
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from strategy_engine.backtest import synthetic
from strategy_engine.brokers.alpaca import AlpacaPaperBroker
from strategy_engine.brokers.alpaca_http import environment_once
from strategy_engine.core import data_quality as dq
from strategy_engine.core import decide
from strategy_engine.core.data_quality import finite
from strategy_engine.core.decide import decision_json
from strategy_engine.core.errors import BrokerUnavailable
from strategy_engine.core.models import Action, Decision, Outcome, Signal
from strategy_engine.store import Session, connect, market
from strategy_engine.store.backfill import flow_arrays
from tests.conftest import DAY
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
T0 = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)

# --------------------------------------------------------------------------------------------
# 1. The flow statement
# --------------------------------------------------------------------------------------------


def _old_sql_map(column: str, mapping: Mapping[str, str], default: str) -> str:
    """`store.market._sql_map` before 39987aa: always the fold."""
    arms = " ".join(f"when '{k}' then '{v}'" for k, v in mapping.items())
    return f"(case {market._sql_spelling(column)} {arms} else {default} end)"


def _old_sql_direction() -> str:
    """`store.market.FLOW_DIRECTION` before 39987aa: a CASE over the pair (kind, side)."""
    kind = _old_sql_map("f.option_type", dq.OPTION_TYPES, "null")
    side = _old_sql_map("f.side", dq.SIDES, "'unknown'")
    arms = " ".join(f"when ('{k}'::text, '{s}'::text) then {d}" for (k, s), d in dq.DIRECTIONS.items())
    return f"(case ({kind}, {side}) {arms} else 0 end)"


OLD_FLOW_DIRECTION = _old_sql_direction()
Scored = dict[datetime, tuple[int | None, int]]


def new_scored(s: Session) -> Scored:
    rows = s.fetchall(f"select ts, cents, dir from ({market.scored_flow('true')}) x")
    return {ts: (cents, d) for ts, cents, d in rows}


def old_scored(s: Session) -> Scored:
    rows = s.fetchall(f"select f.ts, {market.FLOW_CENTS}, {OLD_FLOW_DIRECTION} from public.options_flow f")
    return {ts: (cents, d) for ts, cents, d in rows}


def column_types(s: Session) -> dict[str, str]:
    rows = s.fetchall(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute"
        " where attrelid = 'public.options_flow'::regclass and attnum > 0 and not attisdropped"
    )
    return {str(name): str(typ) for name, typ in rows}


def put_events(
    s: Session, events: Sequence[tuple[str | None, str | None, str | None, str | None, str | None]]
) -> None:
    """(option_type, side, size, trade_price, notional) as text, cast to whatever the columns
    are; event k at T0 + k seconds (its key in `new_scored`/`old_scored`)."""
    types = column_types(s)
    s.execute("delete from public.options_flow")
    cols = ("option_type", "side", "size", "trade_price", "notional")
    casts = ", ".join(f"u.{c}::{types[c]}" for c in cols)
    s.execute(
        f"insert into public.options_flow (ts, underlying, {', '.join(cols)})"
        f" select %s::timestamptz + make_interval(secs => u.k - 1), 'SPY', {casts}"
        " from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
        f" with ordinality as u({', '.join(cols)}, k)",
        (T0, *([e[i] for e in events] for i in range(5))),
    )


def at(k: int) -> datetime:
    return T0 + timedelta(seconds=k)


def _decimal(raw: str | None) -> Decimal | None:
    return None if raw is None else Decimal(raw)


def python_cents(size: str | None, price: str | None, notional: str | None) -> int | None:
    """FLOW_CENTS of numeric columns, written independently with Decimal (docs: a negative, not
    finite or absurd size, price or premium is ignored; notional, else size x price x 100)."""
    z, p, n = _decimal(size), _decimal(price), _decimal(notional)

    def bad(x: Decimal | None, bound: int) -> bool:
        return x is not None and (x.is_nan() or not (0 <= x <= bound))

    if bad(z, 2**31) or bad(p, dq.MAX_OPTION_PRICE) or bad(n, dq.MAX_PREMIUM):
        return None
    with localcontext() as ctx:
        ctx.prec = 200
        premium = n if n is not None else (z * p * 100 if z is not None and p is not None else None)
        if premium is None or premium > dq.MAX_PREMIUM:
            return None
        return int((premium * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


KEYS = [*dq.OPTION_TYPES, *dq.SIDES]
BLANK = st.text(alphabet=dq.BLANKS + "\u200b\ufeff", max_size=3)  # + two that are not blanks
CASED = st.sampled_from(KEYS).flatmap(
    lambda k: st.lists(st.booleans(), min_size=len(k), max_size=len(k)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(k, up, strict=True))
    )
)
SPELLING = st.one_of(
    st.none(),
    st.sampled_from(KEYS),
    st.builds(lambda a, k, b: a + k + b, BLANK, st.one_of(st.sampled_from(KEYS), CASED), BLANK),
    st.builds(lambda k: k.replace("_", "-"), CASED),
    st.builds(lambda k: k.replace("_", " "), CASED),
    st.sampled_from(["", " ", "\u212aall", "c\u0430ll", "CALL\x00"[:4], "Put\u3000", "-", "_", "above__ask"]),
    st.text(max_size=10),
).filter(lambda x: x is None or "\x00" not in x)
NUMBER = st.one_of(
    st.none(),
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "-0", "0", "-1", "2147483648", "2147483649", "1e10", "1e6"]
    ),
    st.decimals(min_value=-(10**12), max_value=10**12, places=3, allow_nan=False, allow_infinity=False).map(
        str
    ),
)
EVENT = st.tuples(SPELLING, SPELLING, NUMBER, NUMBER, st.one_of(st.none(), NUMBER))


@pytest.fixture
def free_flow(empty_db_url: str) -> Iterator[Session]:
    """An options_flow of text and numeric columns, no constraints: any value a vendor may send
    (the engine's own table refuses nulls and some numbers; an existing one may not)."""
    with connect(empty_db_url) as s:
        s.execute(
            "create table public.options_flow (ts timestamptz not null, underlying text not null,"
            " option_type text, side text, size numeric, trade_price numeric, notional numeric)"
        )
        yield s


@BOUNDED
@given(events=st.lists(EVENT, min_size=1, max_size=12))
def test_flow_sql_new_equals_old_and_python_on_any_spelling_and_number(
    free_flow: Session, events: list[tuple[str | None, str | None, str | None, str | None, str | None]]
) -> None:
    put_events(free_flow, events)
    new, old = new_scored(free_flow), old_scored(free_flow)
    expected = {
        at(k): (python_cents(z, p, n), dq.direction(t, sd)) for k, (t, sd, z, p, n) in enumerate(events)
    }
    assert new == old
    assert new == expected


# Spellings short enough for every column shape below (char(12) refuses a longer value).
SHAPE_SPELLINGS = [
    "call", "CALL", " Call ", "c", "C\u3000", "put", "P", "p  ", "\tput\n", "weekly", "", "\u00a0c",
    "buy", "SELL", "Ask ", "above-ask", "Below Bid", "bid", "mid", "unknown", "dark", "\u2003bid",
]  # fmt: skip
SHAPES = {
    "varchar": ("varchar(12)", "varchar(12)", "double precision", "double precision", "double precision"),
    "bpchar": ("char(12)", "char(12)", "real", "real", "real"),
    "enum": ("flow_label", "flow_label", "bigint", "bigint", "bigint"),
    "numeric": ("text", "text", "numeric(12,2)", "numeric", "numeric(20,4)"),
}
SHAPE_NUMBERS = [
    ("1", "1", None), ("5", "1.25", None), (None, "1", None), ("1", None, None), (None, None, "1"),
    ("NaN", "1", None), ("1", "Infinity", None), ("-1", "1", None), ("3", "2", "7"), ("2147483648", "1", None),
    ("1", "1000001", None), ("1", "1", "10000000001"), ("0", "0", None), ("7", "3", "-0"),
]  # fmt: skip


def shaped_table(s: Session, shape: str) -> None:
    t, sd, z, p, n = SHAPES[shape]
    labels = ", ".join("'" + x.replace("'", "''") + "'" for x in dict.fromkeys(SHAPE_SPELLINGS))
    s.execute(f"create type flow_label as enum ({labels})")
    s.execute(
        f"create table public.options_flow (ts timestamptz not null, underlying text not null,"
        f" option_type {t}, side {sd}, size {z}, trade_price {p}, notional {n})"
    )


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_flow_sql_new_equals_old_and_python_on_differently_shaped_columns(
    empty_db_url: str, shape: str, pg_version: str
) -> None:
    """varchar(n), char(n) (blank-padded), an enum, and float8/real/bigint/numeric(p,s) numbers:
    the same (cents, dir) as the old statement; the same direction as Python's rule."""
    events: list[tuple[str | None, str | None, str | None, str | None, str | None]] = []
    for i, t in enumerate(SHAPE_SPELLINGS):
        for j, sd in enumerate(SHAPE_SPELLINGS):
            z, p, n = SHAPE_NUMBERS[(i + j) % len(SHAPE_NUMBERS)]
            if shape == "enum" and any(x is not None and not x.lstrip("-").isdigit() for x in (z, p, n)):
                z, p, n = "3", "2", None  # bigint columns take integers only
            if shape == "numeric" and (z, p, n) in {("NaN", "1", None), ("1", "Infinity", None)}:
                z, p, n = "1", "1", None  # numeric(p,s) refuses NaN/Infinity on PG 15
            events.append((t, sd, z, p, n))
    with connect(empty_db_url) as s:
        shaped_table(s, shape)
        put_events(s, events)
        new, old = new_scored(s), old_scored(s)
        assert new == old
        assert {k: d for k, (_, d) in new.items()} == {
            at(k): dq.direction(t, sd) for k, (t, sd, _, _, _) in enumerate(events)
        }
        assert len(new) == len(SHAPE_SPELLINGS) ** 2


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
def test_flow_sql_new_equals_old_under_a_case_insensitive_collation_where_the_server_has_icu(
    empty_db_url: str, pg_version: str
) -> None:
    """A column with a nondeterministic (ICU, accent- and case-insensitive) collation: the old
    statement read with the column's collation ('Çall' as 'call'); the new one compares byte for
    byte (`collate "C"`), as Python does: every event's direction is Python's, no error."""
    with connect(empty_db_url) as s:
        try:
            s.execute(
                "create collation ci (provider = icu, locale = 'und-u-ks-level1', deterministic = false)"
            )
        except psycopg.errors.FeatureNotSupported:
            pytest.skip(f"PostgreSQL {pg_version} here is built without ICU")
        s.execute(
            "create table public.options_flow (ts timestamptz not null, underlying text not null,"
            " option_type text collate ci, side text collate ci, size numeric, trade_price numeric,"
            " notional numeric)"
        )
        spellings = [
            "call",
            "CALL",
            "\u00c7all",
            "put",
            " Put ",
            "p\u00fbt",
            "buy",
            "B\u00dcY",
            "above-ask",
            "mid",
        ]
        events = [(t, sd, "1", "1", None) for t in spellings for sd in spellings]
        put_events(s, events)
        new = new_scored(s)
        assert {k: d for k, (_, d) in new.items()} == {
            at(k): dq.direction(t, sd) for k, (t, sd, _, _, _) in enumerate(events)
        }
        assert old_scored(s) != new  # the old statement read 'Çall' as 'call': this case is new


def old_flow_sums(
    s: Session, symbols: Sequence[str], start: datetime, end: datetime
) -> dict[str, tuple[int, int, int]]:
    """`market.flow_sums` as it was before 39987aa."""
    rows = s.fetchall(
        f"""
        select underlying::text, {market.clamped_sum("dir > 0")}, {market.clamped_sum("dir < 0")},
               count(*) filter (where {market.FLOW_IGNORED})
        from (
          select f.underlying, {market.FLOW_CENTS} as cents, {OLD_FLOW_DIRECTION} as dir
          from public.options_flow f
          where f.underlying::text = any(%(symbols)s) and f.ts >= %(start)s and f.ts < %(end)s
        ) x
        group by underlying
        """,
        {"symbols": list(symbols), "start": start, "end": end},
    )
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


@pytest.fixture
def flow_500(session: Session) -> tuple[Session, list[str], synthetic.MarketData]:
    symbols = [f"S{i:03d}" for i in range(500)]
    data = synthetic.generate(synthetic.MarketSpec(symbols=symbols, start=DAY, end=DAY, flow_rate=0.1))
    # Every spelling shape the old SQL folded, spread over the generator's events.
    odd = ["CALL", " put", "C\u3000", "weekly", "P", ""]
    sides = ["Above-Ask", "BID ", "\tmid", "dark", "sell", ""]
    flow = [
        (ts, u, odd[i % 6] if i % 7 == 0 else t, sides[i % 6] if i % 5 == 0 else sd, z, p, n)
        for i, (ts, u, t, sd, z, p, n) in enumerate(data.flow)
    ]
    with session.transaction():
        market.insert_flow(session, flow)
    return session, symbols, data


def test_flow_sums_at_500_symbols_equal_the_old_statement_and_the_backfill(
    flow_500: tuple[Session, list[str], synthetic.MarketData],
) -> None:
    s, symbols, data = flow_500
    assert len(data.flow) > 10_000
    # every event: the same (underlying, ts, cents, dir), as multisets
    diff = s.fetchall(
        f"""
        select count(*) from (
          (select f.underlying::text, f.ts, {market.FLOW_CENTS}, {OLD_FLOW_DIRECTION} from public.options_flow f
           except all
           select x.underlying::text, x.ts, x.cents, x.dir from ({market.scored_flow("true")}) x)
          union all
          (select x.underlying::text, x.ts, x.cents, x.dir from ({market.scored_flow("true")}) x
           except all
           select f.underlying::text, f.ts, {market.FLOW_CENTS}, {OLD_FLOW_DIRECTION} from public.options_flow f)
        ) d
        """
    )
    assert diff == [(0,)]
    start = data.minutes[0]
    for end in (data.minutes[30], data.minutes[200], data.minutes[-1] + timedelta(minutes=1)):
        new = market.flow_sums(s, symbols, start, end)
        assert new == old_flow_sums(s, symbols, start, end)
        assert sum(b for b, _, _ in new.values()) > 0 and sum(i for _, _, i in new.values()) > 0
        # the backfill's per-ts arrays add up to the tick's sums over the same window
        arrays = flow_arrays(s, symbols, start, end)
        assert {u: (int(b.sum()), int(r.sum()), int(i.sum())) for u, (_, b, r, i) in arrays.items()} == new


# --------------------------------------------------------------------------------------------
# 2. Decision payloads and the break rule
# --------------------------------------------------------------------------------------------


def held(payload: dict[Any, Any]) -> Decision:
    return Decision(T0, Signal("SPY", Action.HOLD, 0.0, "hold", payload), None, None, Outcome.HELD)


def old_payload(d: Decision) -> Jsonb:
    """What `journal.decision_row` wrote before cc1aa4d: `Jsonb(decision_payload(d))`."""
    return Jsonb(finite(decide._payload(d.signal.payload, d)))


def stored(s: Session, value: Any) -> tuple[str, Any] | str:
    """COPY `value` into a jsonb column as the journal does; its jsonb text, or the error's class."""
    try:
        with s.conn.transaction():
            s.execute("create temporary table if not exists j (v jsonb)")
            s.execute("delete from j")
            s.copy_in("j", ("v",), [(value,)], schema="pg_temp")
            row = s.fetchone("select v::text, v from j")
            assert row is not None
            return row[0], row[1]
    except (psycopg.Error, ValueError, TypeError, RecursionError) as exc:
        return type(exc).__name__


def new_stored(s: Session, d: Decision) -> tuple[str, Any] | str:
    try:
        text = decision_json(d)
    except (ValueError, TypeError, RecursionError) as exc:
        return type(exc).__name__
    return stored(s, text)


FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 0.0, math.nan, math.inf, -math.inf, 1e308, 5e-324, 0.1]),
)
TEXT = st.one_of(
    st.text(max_size=20).filter(lambda x: "\x00" not in x),
    st.sampled_from(["\\", "\\N", "\t", "a\tb\\n", "\r\n", "\\.", "\u2028", '"', "\x7f\x1b", "é" * 3000]),
)
LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40), FLOATS, TEXT)
PAYLOAD = st.dictionaries(
    TEXT,
    st.recursive(
        LEAF,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(st.one_of(TEXT, st.integers(-5, 5), st.booleans(), st.none()), inner, max_size=4),
        ),
        max_leaves=12,
    ),
    max_size=6,
)


@BOUNDED
@given(payload=PAYLOAD)
def test_decision_json_lands_in_jsonb_exactly_as_the_old_jsonb_of_finite(
    session: Session, payload: dict[Any, Any]
) -> None:
    d = held(payload)
    old = stored(session, old_payload(d))
    assert new_stored(session, d) == old
    assert not isinstance(old, str), old  # these payloads are all storable


@pytest.mark.parametrize(
    "payload",
    [
        {"huge": 10**5000},  # beyond Python's int-to-str limit: ValueError in both
        # (A NUL, which jsonb refuses, is now stored as U+FFFD on purpose: test_decision_writes.)
        {"lone": "\ud800"},  # jsonb refuses a lone surrogate escape
        {"when": datetime(2025, 1, 1, tzinfo=UTC)},  # not JSON at all
        {"set": {1, 2}},
        {1: "a", "1": "b"},  # duplicate key after encoding: jsonb keeps the last
        {None: 1, True: 2, 2.5: 3, -0.0: 4},
        {"neg0": -0.0, "deep": [[[[(math.nan,)]]]], "tab\tkey\\": "v\\\t\n"},
    ],
    ids=["huge-int", "lone-surrogate", "datetime", "set", "dup-key", "odd-keys", "neg0-deep-escapes"],
)
def test_decision_json_edge_payloads_store_or_fail_like_the_old_path(
    session: Session, payload: dict[Any, Any]
) -> None:
    d = held(payload)
    assert new_stored(session, d) == stored(session, old_payload(d))


@pytest.mark.parametrize("key", [math.nan, math.inf, -math.inf])
def test_decision_json_a_non_finite_float_key_is_stored_like_the_old_path(
    session: Session, key: float
) -> None:
    d = held({"features": {key: 1.0, "close": math.nan}})
    old = stored(session, old_payload(d))
    assert not isinstance(old, str)
    assert new_stored(session, d) == old


def old_after_last_break(closes: Sequence[float]) -> int:
    """`data_quality.after_last_break` before cc1aa4d (with the removed `is_break`)."""

    def is_break(previous: float, current: float) -> bool:
        return max(previous, current) > dq.BREAK_RATIO * min(previous, current)

    for i in range(len(closes) - 1, -1, -1):
        if closes[i] > dq.MAX_PRICE:
            return len(closes) - i - 1
        if i > 0 and is_break(closes[i - 1], closes[i]):
            return len(closes) - i
    return len(closes)


def old_usable_closes(
    bars: Sequence[tuple[Any, float]], splits: Sequence[tuple[Any, float]], t: Any
) -> list[float]:
    factors = dq.split_factors([ts for ts, _ in bars], splits, t)
    adjusted = [c / f for (_, c), f in zip(bars, factors, strict=True)]
    return adjusted[len(adjusted) - old_after_last_break(adjusted) :]


EDGE = [
    0.0, -0.0, 1.0, 1.2, 1.2000000000000002, 1.1999999999999997, -1.0, -1.2, float(dq.MAX_PRICE),
    float(dq.MAX_PRICE) + 1, math.nextafter(dq.MAX_PRICE, math.inf), dq.MAX_PRICE / 1.2, math.nan, math.inf, -math.inf,
]  # fmt: skip
CLOSE = st.one_of(st.sampled_from(EDGE), st.floats(allow_nan=True, allow_infinity=True), st.floats(0.5, 2.0))
# (closes are float8 from SQL, `market.recent_closes`: never ints or Decimals)


def nan_after_negative(closes: Sequence[float]) -> bool:
    return any(a < 0 and math.isnan(b) for a, b in itertools.pairwise(closes))


@settings(max_examples=500, deadline=None, derandomize=True)
@given(closes=st.lists(CLOSE, max_size=30))
def test_after_last_break_equals_the_array_rule_on_any_floats(closes: list[float]) -> None:
    import numpy as np

    arr = np.array(closes, dtype=np.float64)
    k = np.array([len(closes)], dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):  # 1.2 x -1e308 overflows to -inf: same answer
        assert int(dq.usable_bars(arr, k, len(closes))[0]) == dq.after_last_break(closes)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(closes=st.lists(CLOSE, max_size=30).filter(lambda c: not nan_after_negative(c)))
def test_after_last_break_equals_the_old_rule(closes: list[float]) -> None:
    assert dq.after_last_break(closes) == old_after_last_break(closes)


def test_after_last_break_a_nan_after_a_negative_close_now_follows_the_array_rule() -> None:
    """The one input where the inlined comparison differs from the old max/min: a negative close
    then NaN. Python's max(-1, nan) and min(-1, nan) are both -1, and -1 > 1.2 x -1: the old rule
    saw a break that numpy's `breaks` (NaN propagates) never saw. Unreachable on the tick (closes
    are positive: GOOD_BAR, positive split ratios), and the new rule agrees with the backfill's."""
    import numpy as np

    closes = [5.0, -1.0, math.nan]
    assert old_after_last_break(closes) == 1
    assert dq.after_last_break(closes) == 2 == int(dq.usable_bars(np.array(closes), np.array([3]), 3)[0])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    closes=st.lists(CLOSE, max_size=20).filter(lambda c: not nan_after_negative(c)),
    splits=st.lists(st.tuples(st.integers(0, 25), st.sampled_from([2.0, 0.1, 10.0, 1.25, 3.0])), max_size=3),
    t=st.integers(0, 25),
)
def test_usable_closes_with_and_without_splits_equal_the_old_ones_bit_for_bit(
    closes: list[float], splits: list[tuple[int, float]], t: int
) -> None:
    bars = [(i, c) for i, c in enumerate(closes)]
    splits = sorted(splits)
    for sp in (splits, []):
        new, old = dq.usable_closes(closes, sp, t, range(len(closes))), old_usable_closes(bars, sp, t)
        assert [(type(x), repr(x), math.copysign(1, x)) for x in new] == [
            (type(x), repr(x), math.copysign(1, x)) for x in old
        ]


# --------------------------------------------------------------------------------------------
# 3. Proxies and the CA bundle, read once
# --------------------------------------------------------------------------------------------

ENV_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
URLS = [
    "http://127.0.0.1:8123",
    "https://paper-api.alpaca.markets",
    "http://localhost:8123",
    "http://[::1]:8123",
]
PROXY = st.sampled_from(
    [
        None,
        "",
        "http://proxy.example:3128",
        "http://u:p@proxy2.example:8080",
        "socks5h://127.0.0.1:1080",
        "proxy3:3128",
    ]
)
NO_PROXY = st.sampled_from(
    [
        None, "", "*", "127.0.0.1", "127.0.0.1:8123", "127.0.0.1:9999", "127.0.0.0/8", "10.0.0.0/8", " 127.0.0.1 , x",
        "localhost", ".alpaca.markets", "alpaca.markets", "paper-api.alpaca.markets:443", "*.alpaca.markets", "::1",
        "[::1]", "LOCALHOST",
    ]
)  # fmt: skip
BUNDLE = st.sampled_from([None, "", "/etc/ssl/a.pem", "/etc/ssl/dir"])


def clean_env(mp: pytest.MonkeyPatch) -> None:
    for name in (*ENV_NAMES, "REQUEST_METHOD"):
        mp.delenv(name, raising=False)
        mp.delenv(name.lower(), raising=False)


def effective(session: requests.Session, url: str) -> tuple[str | None, Any]:
    """The proxy a request to `url` goes through and its `verify`, as `Session.request` computes them."""
    merged = session.merge_environment_settings(url, {}, None, None, None)
    return requests.utils.select_proxy(url, merged["proxies"]), merged["verify"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    upper=st.tuples(PROXY, PROXY, PROXY, NO_PROXY),
    lower=st.tuples(PROXY, PROXY, PROXY, NO_PROXY),
    bundles=st.tuples(BUNDLE, BUNDLE),
    base=st.sampled_from(URLS),
    path=st.sampled_from(["", "/v2/account", "/v2/orders?status=open"]),
    cgi=st.booleans(),
)
def test_environment_once_gives_every_request_the_proxy_and_verify_a_per_request_read_gave(
    upper: tuple[str | None, ...],
    lower: tuple[str | None, ...],
    bundles: tuple[str | None, str | None],
    base: str,
    path: str,
    cgi: bool,
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        clean_env(mp)
        for names, values in ((ENV_NAMES[:4], upper), ([n.lower() for n in ENV_NAMES[:4]], lower)):
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    mp.setenv(name, value)
        for name, value in zip(ENV_NAMES[4:], bundles, strict=True):
            if value is not None:
                mp.setenv(name, value)
        if cgi:
            mp.setenv("REQUEST_METHOD", "GET")  # httpoxy: urllib drops HTTP_PROXY under CGI
        old = requests.Session()
        new = requests.Session()
        environment_once(new, base)
        url = base + path
        assert effective(new, url) == effective(old, url)


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker(url: str) -> AlpacaPaperBroker:
    return AlpacaPaperBroker(
        SecretStr(KEY),
        SecretStr(SECRET),
        url,
        timeout_seconds=0.3,
        retry_budget_seconds=1.0,
        backoff_seconds=0.01,
    )


def reaches(fake: FakeAlpaca, call: Any) -> bool:
    before = sum(fake.requests.values())
    try:
        call()
    except (BrokerUnavailable, requests.RequestException):
        return False
    return sum(fake.requests.values()) > before


@pytest.mark.parametrize(
    ("env", "host"),
    [
        ({"NO_PROXY": "127.0.0.1:{port}"}, "127.0.0.1"),
        ({"NO_PROXY": "127.0.0.1:1"}, "127.0.0.1"),
        ({"no_proxy": "127.0.0.1", "NO_PROXY": "nothing.example"}, "127.0.0.1"),
        ({"no_proxy": "nothing.example", "NO_PROXY": "127.0.0.1"}, "127.0.0.1"),
        ({"NO_PROXY": "127.0.0.0/8"}, "127.0.0.1"),
        ({"NO_PROXY": "*"}, "127.0.0.1"),
        ({"NO_PROXY": "localhost"}, "localhost"),
        ({"NO_PROXY": ".localhost"}, "localhost"),
        ({}, "127.0.0.1"),
    ],
    ids=["port", "other-port", "lower-wins", "lower-wins-2", "cidr", "star", "name", "dot-name", "none"],
)
@pytest.mark.parametrize("proxy_var", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_a_real_request_goes_where_a_per_request_read_sent_it(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], host: str, proxy_var: str
) -> None:
    """Through a dead proxy (fails) or straight to the loopback Alpaca, as requests with
    trust_env decided per request, for the same environment."""
    clean_env(monkeypatch)
    port = int(fake.url.rsplit(":", 1)[1].split("/")[0])
    monkeypatch.setenv(proxy_var, f"http://127.0.0.1:{dead_port()}")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(port=port))
    url = fake.url.replace("127.0.0.1", host)
    old = requests.Session()
    old_direct = reaches(fake, lambda: old.get(url + "/v2/account", headers=fake_headers(), timeout=0.5))
    new_direct = reaches(fake, lambda: broker(url).account())
    assert new_direct == old_direct


def fake_headers() -> dict[str, str]:
    return {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


def test_proxy_credentials_never_appear_in_errors_logs_or_reprs(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", f"http://agent:proxy-pw-9f3c@127.0.0.1:{dead_port()}")
    monkeypatch.setenv("HTTP_PROXY", f"http://agent:proxy-pw-9f3c@127.0.0.1:{dead_port()}")
    caplog.set_level(logging.DEBUG)
    b = broker(fake.url)
    with pytest.raises(BrokerUnavailable) as info:
        b.account()
    texts = [repr(b), str(b), str(info.value), repr(info.value), caplog.text]
    texts += traceback.format_exception(info.value)
    assert sum(fake.requests.values()) == 0  # it went to the (dead) proxy
    for text in texts:
        assert "proxy-pw-9f3c" not in text
        assert SECRET not in text
