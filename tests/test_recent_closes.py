"""`market.recent_closes` against a model written from its contract, on random bar series.

Per symbol: the last n good bars before T (closes oldest first, the last one's time), the bad
bars from the oldest one loaded to T (all history when fewer than n are good), the splits with
ex <= T, and the bar times only when there are splits. Bad bars: NULL, NaN, zero, negative,
above MAX_PRICE, in close or in any of open/high/low; bars at or after T never count.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategy_engine.core import data_quality as dq
from strategy_engine.store import Session, market

T0 = datetime(2025, 6, 13, 13, 30, tzinfo=UTC)
GOOD = 100.0
BAD_VALUES = (None, "NaN", 0, -1, dq.MAX_PRICE * 10)
COLUMNS = ("close", "open", "high", "low")
# (minute offset from T0, good, bad column, bad value) per bar
BAR = st.tuples(st.integers(0, 60), st.booleans(), st.sampled_from(COLUMNS), st.sampled_from(BAD_VALUES))


def _insert(s: Session, symbol: str, bars: list[tuple[int, bool, str, object]]) -> dict[datetime, bool]:
    seen: dict[datetime, bool] = {}
    for minute, good, column, value in bars:
        ts = T0 + timedelta(minutes=minute)
        if ts in seen:
            continue
        seen[ts] = good or (column != "close" and value is None)  # a NULL open/high/low is allowed
        row = dict.fromkeys(COLUMNS, GOOD + minute)
        if not good:
            row[column] = value  # type: ignore[assignment]
        s.execute(
            "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
            " values (%s, %s, %s::numeric, %s::numeric, %s::numeric, %s::numeric, 1)",
            (
                symbol,
                ts,
                *(None if row[c] is None else str(row[c]) for c in ("open", "high", "low", "close")),
            ),
        )
    return seen


def _model(seen: dict[datetime, bool], t: datetime, n: int) -> tuple[list[float], datetime | None, int]:
    before = sorted(ts for ts in seen if ts < t)
    good = [ts for ts in before if seen[ts]][-n:] if n else []
    oldest = good[0] if len(good) == n and good else None
    bad = sum(1 for ts in before if not seen[ts] and (oldest is None or ts >= oldest))
    closes = [GOOD + (ts - T0) / timedelta(minutes=1) for ts in good]
    return closes, (good[-1] if good else None), bad


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    series=st.lists(st.lists(BAR, max_size=25), min_size=1, max_size=3),
    t_minute=st.integers(0, 62),
    n=st.integers(1, 8),
    split_day=st.sampled_from([None, 12, 13, 14]),
)
def test_recent_closes_equal_the_model(
    session: Session,
    series: list[list[tuple[int, bool, str, object]]],
    t_minute: int,
    n: int,
    split_day: int | None,
) -> None:
    session.execute("delete from market_data_1m")
    session.execute("delete from corporate_actions")
    symbols = [f"R{i}" for i in range(len(series))]
    seen = {sym: _insert(session, sym, bars) for sym, bars in zip(symbols, series, strict=True)}
    if split_day is not None:  # on the first symbol only: the others carry no bar times
        session.execute(
            "insert into corporate_actions (symbol, ex_date, split_ratio) values (%s, %s, 2)",
            (symbols[0], date(2025, 6, split_day)),
        )
    t = T0 + timedelta(minutes=t_minute)
    got = market.recent_closes(session, [*symbols, "NONE"], t, n)
    assert got["NONE"] == dq.Window([], None, 0, [], [])
    for sym in symbols:
        closes, last, bad = _model(seen[sym], t, n)
        w = got[sym]
        assert (w.closes, w.last, w.ignored) == (closes, last, bad), sym
        assert all(isinstance(c, float) and math.isfinite(c) for c in w.closes)
        ex = datetime(2025, 6, split_day or 1, 4, tzinfo=UTC)  # midnight New York (EDT)
        has_split = sym == symbols[0] and split_day is not None and ex <= t
        assert w.splits == ([(ex, 2.0)] if has_split else [])
        expected_times = sorted(ts for ts in seen[sym] if ts < t and seen[sym][ts])[-n:] if has_split else []
        assert w.times == expected_times


def test_a_numeric_close_reads_back_as_the_same_float(session: Session) -> None:
    price = Decimal("123.456789012345678")
    session.execute(
        "insert into market_data_1m (symbol, ts, close, volume) values ('X', %s, %s, 1)", (T0, price)
    )
    w = market.recent_closes(session, ["X"], T0 + timedelta(minutes=1), 5)["X"]
    assert w == dq.Window([float(price)], T0, 0, [], [])


def test_last_close_is_the_split_adjusted_usable_close_or_none() -> None:
    """What a manual order and a working order outside the strategy are priced at."""
    ex = datetime(2025, 6, 13, 4, tzinfo=UTC)
    before, after = ex - timedelta(minutes=1), ex + timedelta(minutes=1)
    reverse = dq.Window([5.0, 6.0], before, 0, [(ex, 0.1)], [before - timedelta(minutes=1), before])
    assert dq.last_close(reverse, after) == 60.0  # 1:10: $6 then is $60 now
    assert dq.last_close(reverse, ex - timedelta(seconds=1)) == 6.0  # the split is not known yet
    assert dq.last_close(dq.Window([], None, 0, [], []), after) is None
    huge = dq.Window([2e8], before, 0, [(ex, 0.01)], [before])  # $2e10 adjusted: above MAX_PRICE
    assert dq.last_close(huge, after) is None
