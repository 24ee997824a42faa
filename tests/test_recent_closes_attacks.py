"""Attacks on bc2b859, the tick's bars statement (`store.market.recent_closes`): the bad bars
counted as every bar in [oldest loaded, T) less the good ones loaded, and the bar times sent
only for a symbol with a split to apply.

Each case is held to a model written here from the contract (not from the statement), or to the
backfill's arrays (`backtest.market_arrays`, whose bad bars are the bars the bad-bar test picks,
not a difference of counts): every bad value in every column, bars at T, no bars, only bad bars,
fewer good bars than n, bad bars older than the window, duplicated and unknown symbols, several
splits (one with ex exactly at T), on PostgreSQL 16 and 15 and on tables shaped as an existing
project may have them (double precision, real, numeric(p,s), varchar, char(n), an ICU
case-insensitive collation on symbol). Then the manual order's price.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategy_engine import manual_trade as mt
from strategy_engine.backtest import market_arrays
from strategy_engine.core import data_quality as dq
from strategy_engine.core.errors import InputError, MigrationRefused
from strategy_engine.core.strategies.naive_flow_trend import NaiveFlowTrendConfig
from strategy_engine.engine import Deps
from strategy_engine.store import Session, connect, market
from strategy_engine.store.migrations import migrate
from tests.conftest import seed

# 23:30 New York on 2025-06-12: the ex time of a split dated 2025-06-13 (midnight New York,
# 04:00Z) falls 30 minutes in, so T can be before, exactly at and after it.
T0 = datetime(2025, 6, 13, 3, 30, tzinfo=UTC)
EX = {d: datetime(2025, 6, d, 4, tzinfo=UTC) for d in (12, 13, 14)}
MINUTES = 70
COLUMNS = ("open", "high", "low", "close")
POOL = ("AA", "BB", "CC", "DD")
NEG_INF = "-infinity"

# Values every column type below stores as written: NULL, NaN, both infinities, zeros, a
# negative, MAX_PRICE itself (good) and just above it, and a numeric that no float can hold.
ALL_VALUES: tuple[str | None, ...] = (
    None,
    "NaN",
    "Infinity",
    "-Infinity",
    "0",
    "-0",
    "-1",
    str(dq.MAX_PRICE),
    "1000000000.5",
    "2e9",
    "1e400",
)
SHAPE_VALUES: dict[str, tuple[str | None, ...]] = {
    "numeric": ALL_VALUES,
    "float8": tuple(v for v in ALL_VALUES if v != "1e400"),
    "real": tuple(v for v in ALL_VALUES if v not in {"1e400", "1000000000.5"}),  # real rounds it to 1e9
    "numeric_ps": tuple(v for v in ALL_VALUES if v not in {"1e400", "NaN", "Infinity", "-Infinity"}),
    "ci": ALL_VALUES,
}
# Per bar: minute offset from T0 (-1: a bar at -infinity), which column is odd, which value it
# holds (an index into the shape's values; negative: none, the bar is plainly good: about half).
Bar = tuple[int, str, int]


def dense(seed: int, present: float, bad_share: float) -> list[Bar]:
    """A series over every minute (and -infinity): each minute has a bar with chance `present`,
    bad with chance `bad_share` (a random column holding a random value)."""
    rng = random.Random(seed)
    bars: list[Bar] = []
    for minute in range(-1, MINUTES + 1):
        if rng.random() < present:
            bad = rng.random() < bad_share
            bars.append((minute, rng.choice(COLUMNS), rng.randrange(len(ALL_VALUES)) if bad else -1))
    return bars


SERIES_OF_ONE = st.builds(
    dense,
    st.integers(0, 2**32),
    st.sampled_from([0.1, 0.5, 0.9, 1.0]),
    st.sampled_from([0.0, 0.1, 0.3, 0.7, 1.0]),
)
RATIOS = (2.0, 0.5, 3.0, 0.1)
SPLITS = st.dictionaries(
    st.sampled_from(POOL), st.dictionaries(st.sampled_from(sorted(EX)), st.sampled_from(RATIOS)), min_size=1
)


def good_price(minute: int) -> str:
    return str(100 + minute * 0.25)  # exact in float32 too


def is_good(value: str | None, column: str) -> bool:
    """The contract's bad-bar rule for one column, in Decimal (no float rounding)."""
    if value is None:
        return column != "close"
    d = Decimal(value)
    return not d.is_nan() and 0 < d <= dq.MAX_PRICE


Row = tuple[str, str, dict[str, str | None]]  # symbol, ts literal, column values


def build_rows(series: dict[str, list[Bar]], values: tuple[str | None, ...]) -> list[Row]:
    rows: list[Row] = []
    for sym, bars in series.items():
        seen: set[int] = set()
        for minute, column, k in bars:
            if minute in seen:
                continue
            seen.add(minute)
            row: dict[str, str | None] = dict.fromkeys(COLUMNS, good_price(max(minute, 0)))
            if minute < 0:  # a bar at -infinity: always bad (its time could not be decoded)
                row["close"] = "NaN"
            elif k >= 0:
                row[column] = values[k % len(values)]
            ts = NEG_INF if minute < 0 else (T0 + timedelta(minutes=minute)).isoformat()
            rows.append((sym, ts, row))
    return rows


def insert_rows(s: Session, rows: list[Row], typ: str) -> None:
    s.execute(
        f"""
        insert into public.market_data_1m (symbol, ts, open, high, low, close, volume)
        select x.s, x.t, x.o::{typ}, x.h::{typ}, x.l::{typ}, x.c::{typ}, 1
        from unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])
          as x(s, t, o, h, l, c)
        """,
        (
            [r[0] for r in rows],
            [r[1] for r in rows],
            *([r[2][c] for r in rows] for c in COLUMNS),
        ),
    )


def insert_splits(s: Session, splits: dict[str, dict[int, float]]) -> None:
    for sym, by_day in splits.items():
        for day, ratio in by_day.items():
            s.execute(
                "insert into public.corporate_actions (symbol, ex_date, split_ratio) values (%s, %s, %s)",
                (sym, date(2025, 6, day), ratio),
            )


def model(rows: list[Row], splits: dict[str, dict[int, float]], sym: str, t: datetime, n: int) -> dq.Window:
    """The contract of `dq.Window`, from the rows as written."""
    mine = [(ts, cols) for s_, ts, cols in rows if s_ == sym]
    dated = [(None if ts == NEG_INF else datetime.fromisoformat(ts), cols) for ts, cols in mine]
    before = [(ts, cols) for ts, cols in dated if ts is None or ts < t]
    good = sorted(
        (ts, float(Decimal(cols["close"] or "nan")))
        for ts, cols in before
        if ts is not None and all(is_good(cols[c], c) for c in COLUMNS)
    )[-n:]
    bad = [ts for ts, cols in before if not all(is_good(cols[c], c) for c in COLUMNS)]
    if len(good) == n:
        bad = [ts for ts in bad if ts is not None and ts >= good[0][0]]
    applied = sorted((EX[d], r) for d, r in splits.get(sym, {}).items() if EX[d] <= t)
    return dq.Window(
        [c for _, c in good],
        good[-1][0] if good else None,
        len(bad),
        applied,
        [ts for ts, _ in good] if applied else [],
    )


def check_against_model(
    s: Session,
    rows: list[Row],
    splits: dict[str, dict[int, float]],
    asked: list[str],
    t_minute: int,
    n: int,
) -> None:
    t = T0 + timedelta(minutes=t_minute)
    got = market.recent_closes(s, asked, t, n)
    assert set(got) == set(asked)
    for sym in asked:
        want = model(rows, splits, sym, t, n)
        assert got[sym] == want, (sym, t_minute, n)
        assert all(type(c) is float and math.isfinite(c) for c in got[sym].closes)


BOUNDED = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SERIES = st.dictionaries(st.sampled_from(POOL), SERIES_OF_ONE, min_size=2, max_size=4)
# T anywhere, and often just before, at and after the split's ex time, or after every bar.
T_MINUTE = st.one_of(st.integers(0, MINUTES + 2), st.sampled_from([29, 30, 31, MINUTES + 2]))
ASKED = st.lists(st.sampled_from([*POOL, "ZZ"]), min_size=1, max_size=8)


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
@BOUNDED
@given(series=SERIES, splits=SPLITS, asked=ASKED, t_minute=T_MINUTE, n=st.integers(1, 8))
def test_every_bad_value_symbol_and_split_shape_equals_the_model(
    session: Session,
    pg_version: str,
    series: dict[str, list[Bar]],
    splits: dict[str, dict[int, float]],
    asked: list[str],
    t_minute: int,
    n: int,
) -> None:
    """Duplicated and unknown symbols asked, bars at T, a bad bar at -infinity, MAX_PRICE (good)
    and just above it, 1e400, splits before/at/after T and on symbols without bars."""
    session.execute("delete from market_data_1m")
    session.execute("delete from corporate_actions")
    rows = build_rows(series, ALL_VALUES)
    insert_rows(session, rows, "numeric")
    insert_splits(session, splits)
    check_against_model(session, rows, splits, asked, t_minute, n)


def test_the_hand_picked_edges(session: Session) -> None:
    """No bars; only bad bars; one good bar at T only; bad bars older than the window."""
    rows: list[Row] = []
    for sym, minute, value in [
        ("ONLYBAD", 1, "NaN"),
        ("ONLYBAD", 2, "0"),
        ("ONLYBAD", 3, "1e400"),
        ("ATT", 10, good_price(10)),  # exactly at T: neither loaded nor counted
        ("ATT", 9, "-1"),
        ("OLD", 0, "NaN"),  # older than the 2 good bars loaded: not counted
        ("OLD", 1, "Infinity"),
        ("OLD", 5, good_price(5)),
        ("OLD", 6, "-Infinity"),  # between them: counted
        ("OLD", 7, good_price(7)),
        ("OLD", 8, good_price(8)),
    ]:
        cols: dict[str, str | None] = dict.fromkeys(COLUMNS, good_price(minute))
        cols["close"] = value
        rows.append((sym, (T0 + timedelta(minutes=minute)).isoformat(), cols))
    insert_rows(session, rows, "numeric")
    t = T0 + timedelta(minutes=10)
    got = market.recent_closes(session, ["NONE", "ONLYBAD", "ATT", "OLD", "OLD"], t, 2)
    assert got == {
        "NONE": dq.Window([], None, 0, [], []),
        "ONLYBAD": dq.Window([], None, 3, [], []),
        "ATT": dq.Window([], None, 1, [], []),
        "OLD": dq.Window([101.75, 102.0], T0 + timedelta(minutes=8), 0, [], []),
    }
    three = market.recent_closes(session, ["OLD"], t, 3)["OLD"]
    assert three == dq.Window([101.25, 101.75, 102.0], T0 + timedelta(minutes=8), 1, [], [])
    four = market.recent_closes(session, ["OLD"], t, 4)["OLD"]  # fewer than n: all history
    assert four == dq.Window([101.25, 101.75, 102.0], T0 + timedelta(minutes=8), 3, [], [])


# ---- differently shaped tables the migrations accept -----------------------------------------

SHAPES = {  # symbol type, price type, ts type
    "numeric": ("text", "numeric", "timestamptz"),
    "float8": ("varchar(12)", "double precision", "timestamptz"),
    "real": ("char(8)", "real", "timestamptz(0)"),
    "numeric_ps": ("varchar", "numeric(14,4)", "timestamptz(3)"),
    "ci": ("text collate ci", "numeric", "timestamptz"),
}


@pytest.fixture
def shaped(
    request: pytest.FixtureRequest, empty_db_url: str, pg_version: str
) -> Iterator[tuple[Session, str]]:
    shape: str = request.param
    sym, price, ts = SHAPES[shape]
    with connect(empty_db_url) as s:
        if shape == "ci":
            try:
                s.execute(
                    "create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
                )
            except psycopg.errors.FeatureNotSupported:
                pytest.skip(f"PostgreSQL {pg_version} here is built without ICU")
        s.execute(
            f"create table public.market_data_1m (id bigint generated by default as identity primary key,"
            f" symbol {sym} not null, ts {ts} not null, open {price}, high {price}, low {price},"
            f" close {price}, volume bigint)"
        )
        migrate(s)
        yield s, shape


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
@pytest.mark.parametrize("shaped", list(SHAPES), indirect=True)
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(series=SERIES, splits=SPLITS, asked=ASKED, t_minute=T_MINUTE, n=st.integers(1, 8))
def test_a_migrated_table_of_another_shape_equals_the_model(
    shaped: tuple[Session, str],
    pg_version: str,
    series: dict[str, list[Bar]],
    splits: dict[str, dict[int, float]],
    asked: list[str],
    t_minute: int,
    n: int,
) -> None:
    s, shape = shaped
    s.execute("delete from market_data_1m")
    s.execute("delete from corporate_actions")
    rows = build_rows(series, SHAPE_VALUES[shape])
    insert_rows(s, rows, SHAPES[shape][1].split(" collate")[0])
    insert_splits(s, splits)
    check_against_model(s, rows, splits, asked, t_minute, n)


CI_KEYED_BYTEWISE = """
create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
create table public.market_data_1m (symbol text collate ci not null, ts timestamptz not null,
  open numeric, high numeric, low numeric, close numeric, volume bigint);
create unique index market_data_1m_symbol_ts on public.market_data_1m (symbol collate "C", ts);
"""


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
def test_a_key_in_another_collation_than_the_symbol_column_is_not_the_engines_key(
    empty_db_url: str, pg_version: str
) -> None:
    """A unique index on (symbol collate "C", ts) over a case-insensitive symbol column lets
    'SPY' and 'spy' share a ts, which the engine's statements read as one symbol (counting a
    good bar as bad: count - good). Such an index is not the engine's key: the migration makes
    its own in the column's collation, which refuses the second row; with the pair already
    there, it refuses the migration with one line naming the duplicate."""
    with connect(empty_db_url) as s:
        try:
            s.execute(CI_KEYED_BYTEWISE)
        except psycopg.errors.FeatureNotSupported:
            pytest.skip(f"PostgreSQL {pg_version} here is built without ICU")
        rows = (
            "insert into public.market_data_1m (symbol, ts, close, volume) values"
            " ('SPY', %(a)s, 100, 1), ('spy', %(a)s, 100, 1)"
        )
        s.execute(rows, {"a": T0})
        with pytest.raises(MigrationRefused) as refused:
            migrate(s)
        assert "public.market_data_1m has 1 duplicated (symbol, ts) key(s)" in str(refused.value)
        s.execute("delete from public.market_data_1m where symbol collate \"C\" = 'spy'")  # = 'SPY' too
        migrate(s)
        with pytest.raises(psycopg.errors.UniqueViolation):
            s.execute(rows.replace("('SPY', %(a)s, 100, 1), ", ""), {"a": T0})
        s.execute(
            "insert into public.market_data_1m (symbol, ts, close, volume) values ('SPY', %s, 101, 1)",
            (T0 + timedelta(minutes=1),),
        )
        t = T0 + timedelta(minutes=2)
        tick = market.recent_closes(s, ["SPY"], t, 2)["SPY"]
        grid = np.array([market_arrays.to_us(t)], dtype=np.int64)
        arrays = market_arrays.load(s, ("SPY",), t, t + timedelta(minutes=1), 2, 15)
        cfg = NaiveFlowTrendConfig(symbols=("SPY",), sma_window=2)
        backfill_ignored = int(market_arrays.features(arrays, grid, cfg).ignored_bars[0, 0])
    assert (tick.closes, tick.ignored, backfill_ignored) == ([100.0, 101.0], 0, 0)


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
def test_a_database_migrated_before_the_collation_check_gets_the_engines_key(
    empty_db_url: str, pg_version: str
) -> None:
    """Migrated by the files as they were (a byte-wise key counted as the key, so none was made):
    the next migration adds the key in the column's collation."""
    with connect(empty_db_url) as s:
        try:
            s.execute(CI_KEYED_BYTEWISE)
        except psycopg.errors.FeatureNotSupported:
            pytest.skip(f"PostgreSQL {pg_version} here is built without ICU")
        migrate(s)
        s.execute("drop index public.market_data_1m_symbol_ts_engine_key")  # as the old files left it
        s.execute("delete from supabase_migrations.schema_migrations where version = '20261130000000'")
        assert migrate(s) == ["20261130000000"]
        s.execute(
            "insert into public.market_data_1m (symbol, ts, close, volume) values ('SPY', %s, 1, 1)", (T0,)
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            s.execute(
                "insert into public.market_data_1m (symbol, ts, close, volume) values ('spy', %s, 1, 1)",
                (T0,),
            )


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
def test_a_table_inheriting_from_market_data_is_refused_with_one_line(
    empty_db_url: str, pg_version: str
) -> None:
    """An archive table made with INHERITS (old-style partitioning): `from public.market_data_1m`
    reads its rows too, and the parent's unique key does not cover them (a (symbol, ts) in both
    counted a good bar as bad, and loaded it twice). The migration refuses, names the child and
    says what to do; nothing is applied."""
    with connect(empty_db_url) as s:
        s.execute(
            "create table public.market_data_1m (symbol text not null, ts timestamptz not null,"
            " open numeric, high numeric, low numeric, close numeric, volume bigint, unique (symbol, ts));"
            "create table public.market_data_1m_archive () inherits (public.market_data_1m)"
        )
        with pytest.raises(MigrationRefused) as refused:
            migrate(s)
        line = str(refused.value)
        assert "\n" not in line
        assert "public.market_data_1m has tables inheriting from it (market_data_1m_archive)" in line
        assert "ALTER TABLE <child> NO INHERIT public.market_data_1m" in line
        assert s.fetchone("select to_regclass('public.engine_runs')") == (None,)  # nothing applied
        s.execute("alter table public.market_data_1m_archive no inherit public.market_data_1m")
        migrate(s)


@pytest.mark.parametrize("pg_version", ["16", "15"], indirect=True)
def test_a_partitioned_market_data_table_is_accepted(empty_db_url: str, pg_version: str) -> None:
    """Declarative partitions are in pg_inherits too, but a partitioned table's keys cover them:
    not refused, and the statement reads every partition's bars once."""
    with connect(empty_db_url) as s:
        s.execute(
            "create table public.market_data_1m (symbol text not null, ts timestamptz not null,"
            " open numeric, high numeric, low numeric, close numeric, volume bigint, unique (symbol, ts))"
            " partition by range (ts);"
            "create table public.market_data_1m_a partition of public.market_data_1m"
            " for values from ('2025-01-01') to ('2025-06-13 13:31+00');"
            "create table public.market_data_1m_b partition of public.market_data_1m"
            " for values from ('2025-06-13 13:31+00') to ('2026-01-01')"
        )
        migrate(s)
        s.execute(
            "insert into public.market_data_1m (symbol, ts, close, volume) values"
            " ('SPY', %(a)s, 100, 1), ('SPY', %(b)s, 101, 1)",
            {"a": T0, "b": T0 + timedelta(minutes=1)},
        )
        w = market.recent_closes(s, ["SPY"], T0 + timedelta(minutes=2), 5)["SPY"]
    assert (w.closes, w.ignored, w.last) == ([100.0, 101.0], 0, T0 + timedelta(minutes=1))


# ---- the tick's features against the backfill's, minute by minute -----------------------------


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(series=SERIES, splits=SPLITS, n=st.integers(1, 8))
def test_the_ticks_features_equal_the_backfills_at_every_minute(
    session: Session, series: dict[str, list[Bar]], splits: dict[str, dict[int, float]], n: int
) -> None:
    """Bars, close (split-adjusted), SMA, last bar time, ignored bars and series break: the tick
    (`recent_closes` then `window_features`) and the backfill (`market_arrays.features`) at each
    T from T0 to past the last bar, across the split's ex time."""
    session.execute("delete from market_data_1m")
    session.execute("delete from corporate_actions")
    rows = build_rows(series, ALL_VALUES)
    insert_rows(session, rows, "numeric")
    insert_splits(session, splits)
    symbols = tuple(sorted(POOL))
    times = [T0 + timedelta(minutes=k) for k in range(MINUTES + 3)]
    cfg = NaiveFlowTrendConfig(symbols=symbols, sma_window=n)
    arrays = market_arrays.load(session, symbols, times[0], times[-1] + timedelta(minutes=1), n, 15)
    grid = np.array([market_arrays.to_us(t) for t in times], dtype=np.int64)
    f = market_arrays.features(arrays, grid, cfg)
    for i, t in enumerate(times):
        tick = dq.window_features(symbols, market.recent_closes(session, symbols, t, n), {}, t, n)
        for j, sym in enumerate(symbols):
            got = tick[sym]
            close = float(f.close[j, i])
            sma = float(f.sma[j, i])
            last = int(f.last_ts[j, i])
            want: tuple[Any, ...] = (
                int(f.bars[j, i]),
                None if math.isnan(close) else close,
                None if math.isnan(sma) else sma,
                None if last < 0 else market_arrays.to_datetime(last),
                int(f.ignored_bars[j, i]),
                bool(f.series_break[j, i]),
            )
            have = (got.bars, got.close, got.sma, got.last_bar_ts, got.ignored_bars, got.series_break)
            if have[2] is not None and want[2] is not None:  # the SMA: two summation orders
                assert math.isclose(have[2], want[2], rel_tol=1e-12), (sym, t)
                have, want = (*have[:2], None, *have[3:]), (*want[:2], None, *want[3:])
            assert have == want, (sym, t)


def test_the_ticks_closes_are_the_backfills_bit_for_bit_whatever_extra_float_digits(session: Session) -> None:
    """A database (or role) may set `extra_float_digits = 0`: float8 then prints 15 significant
    digits, so a close read as text is rounded. Split-adjusted vendor closes have 17 (135.58 / 3
    is 45.193333333333335). The tick reads its closes in binary, as the backfill does
    (float8send): the same doubles, the ones the numerics convert to."""
    texts = ["45.193333333333335", "45.19666666666667", "0.30000000000000004"]
    rows: list[Row] = []
    for k, c in enumerate(texts):
        rows.append(("SPY", (T0 + timedelta(minutes=k)).isoformat(), dict.fromkeys(COLUMNS, c)))
    insert_rows(session, rows, "numeric")
    session.execute("set extra_float_digits = 0")
    want = [float(c) for c in texts]  # correctly rounded, as PostgreSQL's numeric -> float8
    # The setting bites: each close printed as text reads back as another double.
    printed = session.fetchall("select c::numeric::float8::text from unnest(%s::text[]) c", (texts,))
    assert [float(r[0]) for r in printed] == [45.1933333333333, 45.1966666666667, 0.3]
    t = T0 + timedelta(minutes=len(texts))
    got = market.recent_closes(session, ["SPY"], t, 5)["SPY"]
    assert (got.closes, got.ignored, got.last) == (want, 0, T0 + timedelta(minutes=2))
    arrays = market_arrays.load(session, ("SPY",), T0, t, 5, 15)
    assert arrays.bar_close[0].tolist() == want


# ---- the manual order's price ------------------------------------------------------------------

MANUAL_AT = datetime(2025, 6, 13, 17, 0, tzinfo=UTC)


def manual_bars(s: Session, closes: list[str | None]) -> None:
    """SPY bars ending at MANUAL_AT (the manual order's minute reads bars up to it), oldest first."""
    rows: list[Row] = []
    for k, c in enumerate(reversed(closes)):
        cols: dict[str, str | None] = dict.fromkeys(COLUMNS, "50")
        cols["close"] = c
        rows.append(("SPY", (MANUAL_AT - timedelta(minutes=k)).isoformat(), cols))
    insert_rows(s, rows, "numeric")


def buy(s: Session, qty: float, at: datetime = MANUAL_AT) -> Any:
    return mt.manual_trade(s, "sim", "SPY", "buy", qty, deps=Deps(clock=lambda: at))


def test_a_manual_order_is_priced_at_the_last_good_close_past_a_bad_last_bar(session: Session) -> None:
    seed(session, cash=10_000.0)
    manual_bars(session, ["40", "50", "NaN"])  # the last bar is bad: the price is the one before, 50
    # 201 x 50 = 10,050 > 10,000 (at the NaN bar's neighbour 40 it would pass)
    with pytest.raises(InputError) as err:
        buy(session, 201)
    assert "refused: buying_power (observed 10,050.00, limit 10,000.00)" in str(err.value)
    assert "\n" not in str(err.value)
    assert session.fetchall("select count(*) from paper_trades") == [(0,)]


@pytest.mark.parametrize("closes", [[], ["NaN", "0", "-1", None, "1e400"]], ids=["no-bars", "only-bad"])
def test_a_manual_order_without_a_good_bar_is_one_line_and_nothing_written(
    session: Session, closes: list[str | None]
) -> None:
    seed(session, cash=10_000.0)
    manual_bars(session, closes)
    with pytest.raises(InputError) as err:
        buy(session, 1)
    assert str(err.value) == "no price for SPY in market_data_1m: a manual order needs a recent bar"
    assert session.fetchall("select count(*) from paper_trades") == [(0,)]


def test_a_manual_order_after_a_reverse_splits_ex_time_is_priced_at_the_adjusted_close(
    session: Session,
) -> None:
    """The last bar (23:59 New York) is before a 1:10 split's ex time (midnight): $5 then is $50
    now, as the tick's features say. 1,000 shares cost $50,000 against $10,000 of cash."""
    seed(session, cash=10_000.0)
    at = EX[13]
    rows: list[Row] = [
        ("SPY", (at - timedelta(minutes=k)).isoformat(), dict.fromkeys(COLUMNS, "5")) for k in (1, 2)
    ]
    insert_rows(session, rows, "numeric")
    insert_splits(session, {"SPY": {13: 0.1}})
    t = at + timedelta(minutes=1)
    w = market.recent_closes(session, ["SPY"], t, 1)["SPY"]
    assert dq.window_features(["SPY"], {"SPY": w}, {}, t, 1)["SPY"].close == 50.0  # the tick's price
    with pytest.raises(InputError) as err:
        buy(session, 1000, at)
    assert "refused: buying_power" in str(err.value)
