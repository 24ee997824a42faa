"""NYSE regular sessions from exchange_calendars (XNYS): holidays and 13:00 half days included.

2020..2030 come from the table precomputed from the library (`core.sessions`), so the tick
imports neither pandas nor exchange_calendars; other years ask the library itself (imported
then, its calendar object cached per process: safe to lose and costly to build).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from strategy_engine.core import sessions
from strategy_engine.core.errors import InputError

NEW_YORK = ZoneInfo("America/New_York")


@lru_cache(maxsize=1)
def _xnys() -> Any:
    import exchange_calendars as xcals

    return xcals.get_calendar("XNYS", start="2015-01-01")


def trading_date(minute: datetime) -> date:
    """The New York calendar date of `minute`: the key of a strategy's day state."""
    return minute.astimezone(NEW_YORK).date()


def session_bounds(day: date) -> tuple[datetime, datetime] | None:
    """(open, close) in UTC of the regular session on `day`, or None when NYSE is closed.

    Raises InputError for a day outside both the shipped table and the library's range.
    """
    if sessions.covers(day):
        return sessions.bounds(day)
    return library_session_bounds(day)


def library_session_bounds(day: date) -> tuple[datetime, datetime] | None:
    """`session_bounds` as exchange_calendars answers it (the source of the shipped table)."""
    import pandas as pd

    cal = _xnys()
    label = pd.Timestamp(day)
    first, last = cal.first_session.date(), cal.last_session.date()
    if not first <= day <= last:
        raise InputError(f"{day} is outside the NYSE calendar's range ({first} to {last})")
    if not cal.is_session(label):
        return None
    return (
        cal.session_open(label).to_pydatetime().astimezone(UTC),
        cal.session_close(label).to_pydatetime().astimezone(UTC),
    )


def is_open(minute: datetime) -> bool:
    """True when open <= minute < close of that day's regular session."""
    bounds = session_bounds(trading_date(minute))
    return bounds is not None and bounds[0] <= minute < bounds[1]


def session_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Each regular session's [open, close) clipped to [start, end), in order (UTC).

    The one walk over sessions: `session_minutes` and the backfill's vectorised grid both
    expand these windows, so they cannot disagree on a half day or a holiday.
    """
    out: list[tuple[datetime, datetime]] = []
    day, last = trading_date(start), trading_date(end)
    while day <= last:
        bounds = session_bounds(day)
        if bounds is not None:
            a, z = max(bounds[0], start), min(bounds[1], end)
            if a < z:
                out.append((a, z))
        day += timedelta(days=1)
    return out


def fill_minute(minute: datetime) -> datetime:
    """When an order sent at `minute` can first fill: `minute` in a session, else the next open
    (Alpaca queues a day order sent while closed). Raises InputError past the calendar's range."""
    windows = session_windows(minute, minute + timedelta(days=10))  # the longest NYSE gap is 4 days
    return windows[0][0] if windows else minute


def session_minutes(start: datetime, end: datetime) -> list[datetime]:
    """Every regular-session minute T with start <= T < end, in order (UTC)."""
    out: list[datetime] = []
    for a, z in session_windows(start, end):
        t = a
        while t < z:
            out.append(t)
            t += timedelta(minutes=1)
    return out


def floor_minute(ts: datetime) -> datetime:
    """Truncate to the minute, in UTC; naive input is refused by the callers' parsers."""
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def session_bounds_or_day_start(day: date) -> datetime:
    """The session open of `day` if NYSE trades then, else midnight New York time of `day`."""
    bounds = session_bounds(day)
    if bounds is not None:
        return bounds[0]
    return datetime(day.year, day.month, day.day, tzinfo=NEW_YORK).astimezone(UTC)


def parse_minute(text: str) -> datetime:
    """An ISO 8601 time with an offset (or Z), truncated to the minute in UTC."""
    raw = text.strip()
    try:
        ts = datetime.fromisoformat(raw.replace("z", "Z"))
        if ts.tzinfo is None:
            raise InputError(f"time {text!r} has no UTC offset: add Z or +HH:MM")
        return floor_minute(ts)
    except (ValueError, OverflowError):
        raise InputError(f"invalid time {text!r}: expected ISO 8601, e.g. 2025-06-13T14:30:00Z") from None
