"""NYSE sessions (XNYS): holidays, 13:00 half days, DST, the New York trading date, parsing T.

Pure code only: the calendar is a library object, no clock is read (every time is given).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_engine.core import calendar
from strategy_engine.core.errors import InputError

PURE = settings(max_examples=200, derandomize=True, database=None, deadline=None)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def ny_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=calendar.NEW_YORK).astimezone(UTC)


def minutes_of(day: date) -> list[datetime]:
    return calendar.session_minutes(ny_midnight(day), ny_midnight(day + timedelta(days=1)))


@pytest.mark.parametrize(
    "day",
    [date(2025, 7, 4), date(2025, 12, 25), date(2025, 1, 1), date(2025, 6, 14), date(2025, 6, 15)],
    ids=["independence_day", "christmas", "new_year", "saturday", "sunday"],
)
def test_session_bounds_when_holiday_or_weekend_then_no_session(day: date) -> None:
    assert calendar.session_bounds(day) is None
    assert minutes_of(day) == []
    assert not calendar.is_open(ny_midnight(day) + timedelta(hours=12))


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc", "ny_close"),
    [
        (date(2025, 6, 13), utc(2025, 6, 13, 13, 30), utc(2025, 6, 13, 20), "16:00"),  # EDT full day
        (date(2025, 12, 1), utc(2025, 12, 1, 14, 30), utc(2025, 12, 1, 21), "16:00"),  # EST full day
        (date(2025, 3, 7), utc(2025, 3, 7, 14, 30), utc(2025, 3, 7, 21), "16:00"),  # last Friday of EST
        (date(2025, 3, 10), utc(2025, 3, 10, 13, 30), utc(2025, 3, 10, 20), "16:00"),  # first Monday of EDT
        (date(2025, 7, 3), utc(2025, 7, 3, 13, 30), utc(2025, 7, 3, 17), "13:00"),  # half day, EDT
        (date(2025, 11, 28), utc(2025, 11, 28, 14, 30), utc(2025, 11, 28, 18), "13:00"),  # half day, EST
        (date(2025, 12, 24), utc(2025, 12, 24, 14, 30), utc(2025, 12, 24, 18), "13:00"),  # half day, EST
    ],
    ids=["full_edt", "full_est", "before_dst", "after_dst", "half_jul_3", "half_nov_28", "half_dec_24"],
)
def test_session_bounds_when_session_then_open_and_close_in_utc(
    day: date, open_utc: datetime, close_utc: datetime, ny_close: str
) -> None:
    bounds = calendar.session_bounds(day)
    assert bounds == (open_utc, close_utc)
    assert all(t.utcoffset() == timedelta(0) for t in bounds)
    assert [t.astimezone(calendar.NEW_YORK).strftime("%H:%M") for t in bounds] == ["09:30", ny_close]


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc"),
    [
        (date(2025, 6, 13), utc(2025, 6, 13, 13, 30), utc(2025, 6, 13, 20)),
        (date(2025, 7, 3), utc(2025, 7, 3, 13, 30), utc(2025, 7, 3, 17)),
        (date(2025, 11, 28), utc(2025, 11, 28, 14, 30), utc(2025, 11, 28, 18)),
        (date(2025, 12, 24), utc(2025, 12, 24, 14, 30), utc(2025, 12, 24, 18)),
    ],
    ids=["full_day", "half_jul_3", "half_nov_28", "half_dec_24"],
)
@pytest.mark.parametrize(
    ("edge", "offset_minutes", "expected"),
    [("open", 0, True), ("open", -1, False), ("close", 0, False), ("close", -1, True)],
    ids=["at_open", "minute_before_open", "at_close", "minute_before_close"],
)
def test_is_open_when_at_session_edges_then_open_is_inclusive_and_close_exclusive(
    day: date, open_utc: datetime, close_utc: datetime, edge: str, offset_minutes: int, expected: bool
) -> None:
    t = (open_utc if edge == "open" else close_utc) + timedelta(minutes=offset_minutes)
    assert calendar.is_open(t) is expected
    assert calendar.is_open(t.astimezone(calendar.NEW_YORK)) is expected


@pytest.mark.parametrize(
    ("day", "first", "last", "count"),
    [
        (date(2025, 6, 13), utc(2025, 6, 13, 13, 30), utc(2025, 6, 13, 19, 59), 390),
        (date(2025, 12, 1), utc(2025, 12, 1, 14, 30), utc(2025, 12, 1, 20, 59), 390),
        (date(2025, 7, 3), utc(2025, 7, 3, 13, 30), utc(2025, 7, 3, 16, 59), 210),
        (date(2025, 11, 28), utc(2025, 11, 28, 14, 30), utc(2025, 11, 28, 17, 59), 210),
        (date(2025, 12, 24), utc(2025, 12, 24, 14, 30), utc(2025, 12, 24, 17, 59), 210),
        (date(2025, 7, 4), None, None, 0),
        (date(2025, 12, 25), None, None, 0),
        (date(2025, 6, 14), None, None, 0),
    ],
    ids=[
        "full_edt",
        "full_est",
        "half_jul_3",
        "half_nov_28",
        "half_dec_24",
        "jul_4",
        "christmas",
        "saturday",
    ],
)
def test_session_minutes_when_one_day_then_every_minute_from_the_open_to_the_last_before_the_close(
    day: date, first: datetime | None, last: datetime | None, count: int
) -> None:
    expected = [] if first is None else [first + timedelta(minutes=k) for k in range(count)]
    assert expected[-1:] == ([] if last is None else [last])  # the hand-written bounds agree
    got = minutes_of(day)
    assert got == expected
    assert all(calendar.is_open(t) for t in got)


def test_session_minutes_when_range_spans_a_holiday_week_then_sums_the_sessions() -> None:
    week = calendar.session_minutes(ny_midnight(date(2025, 6, 30)), ny_midnight(date(2025, 7, 7)))
    assert len(week) == 390 + 390 + 390 + 210  # Mon-Wed full, Thu half, Fri Jul 4 closed
    assert week == sorted(week)
    assert len(set(week)) == len(week)


def test_session_minutes_when_range_cuts_a_session_then_start_inclusive_end_exclusive() -> None:
    got = calendar.session_minutes(utc(2025, 6, 13, 13, 0), utc(2025, 6, 13, 13, 35))
    assert got == [utc(2025, 6, 13, 13, 30 + i) for i in range(5)]
    assert calendar.session_minutes(utc(2025, 6, 13, 19, 58), utc(2025, 6, 13, 23)) == [
        utc(2025, 6, 13, 19, 58),
        utc(2025, 6, 13, 19, 59),
    ]


@pytest.mark.parametrize(
    ("minute", "expected"),
    [
        (utc(2025, 6, 14, 2, 0), date(2025, 6, 13)),  # Friday evening in New York
        (utc(2025, 6, 13, 3, 59), date(2025, 6, 12)),
        (utc(2025, 6, 13, 4, 0), date(2025, 6, 13)),  # EDT midnight
        (utc(2025, 12, 2, 4, 59), date(2025, 12, 1)),
        (utc(2025, 12, 2, 5, 0), date(2025, 12, 2)),  # EST midnight
        (datetime(2025, 6, 13, 23, 30, tzinfo=timezone(timedelta(hours=-4))), date(2025, 6, 13)),
    ],
    ids=[
        "edt_evening",
        "edt_before_midnight",
        "edt_midnight",
        "est_before_midnight",
        "est_midnight",
        "offset",
    ],
)
def test_trading_date_when_any_utc_minute_then_new_york_date(minute: datetime, expected: date) -> None:
    assert calendar.trading_date(minute) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-13T14:30:00Z", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T14:30Z", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T14:30:00z", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T14:30:00+00:00", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T10:30:00-04:00", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T16:30:00+02:00", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T20:00:00+05:30", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T14:30:59.999999Z", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13T10:30:45-04:00", utc(2025, 6, 13, 14, 30)),
        ("  2025-06-13T14:30:00Z\n", utc(2025, 6, 13, 14, 30)),
        ("2025-06-13 14:30:00Z", utc(2025, 6, 13, 14, 30)),
    ],
)
def test_parse_minute_when_offset_given_then_utc_minute_without_seconds(
    text: str, expected: datetime
) -> None:
    got = calendar.parse_minute(text)
    assert got == expected
    assert got.utcoffset() == timedelta(0)
    assert (got.second, got.microsecond) == (0, 0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2025-06-13T14:30:00", "no UTC offset"),
        ("2025-06-13", "no UTC offset"),
        ("", "invalid time"),
        ("garbage", "invalid time"),
        ("tomorrow 9:30", "invalid time"),
        ("2025-13-01T00:00:00Z", "invalid time"),
        ("2025-06-13T25:00:00Z", "invalid time"),
        ("2025-06-13T14:30:00+24:00", "invalid time"),
        ("1718289000", "invalid time"),
        ("2025-06-13T14:30:00Z\nDROP TABLE", "invalid time"),
    ],
    ids=[
        "naive",
        "date_only",
        "empty",
        "garbage",
        "words",
        "month_13",
        "hour_25",
        "offset_24h",
        "epoch",
        "two_lines",
    ],
)
def test_parse_minute_when_naive_or_garbage_then_one_line_input_error(text: str, says: str) -> None:
    with pytest.raises(InputError) as info:
        calendar.parse_minute(text)
    message = str(info.value)
    assert says in message
    assert repr(text) in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["9999-12-31T23:59:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_parse_minute_when_instant_out_of_range_then_input_error(text: str) -> None:
    with pytest.raises(InputError):
        calendar.parse_minute(text)


@pytest.mark.parametrize("day", [date(2014, 6, 2), date(2100, 6, 1)], ids=["before_2015", "year_2100"])
def test_session_bounds_when_day_outside_the_calendar_then_one_line_input_error(day: date) -> None:
    with pytest.raises(InputError) as info:
        calendar.session_bounds(day)
    message = str(info.value)
    assert str(day) in message
    assert "\n" not in message
    with pytest.raises(InputError):
        calendar.is_open(ny_midnight(day) + timedelta(hours=11))


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@PURE
@given(
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=offsets),  # noqa: DTZ001
)
def test_parse_minute_when_any_aware_time_then_its_utc_minute(ts: datetime) -> None:
    got = calendar.parse_minute(ts.isoformat())
    assert got == calendar.floor_minute(ts)
    assert got <= ts < got + timedelta(minutes=1)
    assert got.utcoffset() == timedelta(0)
    assert (got.second, got.microsecond) == (0, 0)


@PURE
@given(st.datetimes(min_value=datetime(2025, 1, 2), max_value=datetime(2025, 12, 31), timezones=st.just(UTC)))  # noqa: DTZ001
def test_is_open_when_any_minute_of_2025_then_inside_its_new_york_session(ts: datetime) -> None:
    minute = calendar.floor_minute(ts)
    bounds = calendar.session_bounds(calendar.trading_date(minute))
    expected = bounds is not None and bounds[0] <= minute < bounds[1]
    assert calendar.is_open(minute) is expected
    if expected:
        ny = minute.astimezone(calendar.NEW_YORK)
        assert (9, 30) <= (ny.hour, ny.minute) < (16, 0)


# ---- the shipped session table (core.sessions) ---------------------------------------------------


def test_shipped_sessions_equal_the_library_build() -> None:
    """nyse_sessions.json is exactly what exchange_calendars gives for 2020..2030 (rebuild: see core.sessions)."""
    import json

    from strategy_engine.core import sessions

    shipped = json.loads(sessions.DATA.read_text(encoding="utf-8"))
    built = sessions.build()
    assert {k: v for k, v in shipped.items() if k != "source"} == {
        k: v for k, v in built.items() if k != "source"
    }


def test_every_day_2020_to_2030_from_the_table_equals_the_library() -> None:
    """Day by day against the library's own schedule (not through the table's format)."""
    import exchange_calendars as xcals

    from strategy_engine.core import sessions

    cal = xcals.get_calendar("XNYS", start="2020-01-01", end="2030-12-31")
    library = {
        ts.date(): (row.open.to_pydatetime(), row.close.to_pydatetime())
        for ts, row in cal.schedule.iterrows()
    }
    day, checked = sessions.FIRST, 0
    while day <= sessions.LAST:
        assert sessions.covers(day)
        assert calendar.session_bounds(day) == library.get(day), day
        checked += 1
        day += timedelta(days=1)
    assert checked == 4018 and len(library) == 2763  # 11 years of NYSE sessions


def test_outside_the_table_the_library_answers() -> None:
    from strategy_engine.core import sessions

    assert not sessions.covers(date(2019, 12, 31))
    assert calendar.session_bounds(date(2019, 12, 31)) == (utc(2019, 12, 31, 14, 30), utc(2019, 12, 31, 21))
    assert calendar.session_bounds(date(2019, 12, 25)) is None
