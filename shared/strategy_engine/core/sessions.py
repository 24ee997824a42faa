"""NYSE regular sessions 2020..2030, precomputed from exchange_calendars and shipped as data.

Building the XNYS calendar costs pandas and exchange_calendars at import plus ~0.5 s per
process: too much for a cold start that must answer within the minute. The sessions are a
compact JSON file (`nyse_sessions.json`, beside this module): the weekdays NYSE is closed and the
sessions whose open or close is not 09:30-16:00 New York time. Every other weekday of the range
is a 09:30-16:00 session. `build()` regenerates the document from the library (a test holds the
shipped file equal to it):

    python -m strategy_engine.core.sessions > shared/strategy_engine/core/nyse_sessions.json
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

DATA = Path(__file__).with_name("nyse_sessions.json")
NEW_YORK = ZoneInfo("America/New_York")
FIRST, LAST = date(2020, 1, 1), date(2030, 12, 31)
REGULAR = ("09:30", "16:00")  # New York wall time


@lru_cache(maxsize=1)
def _table() -> tuple[frozenset[date], dict[date, tuple[str, str]], date, date]:
    doc = json.loads(DATA.read_text(encoding="utf-8"))
    closed = frozenset(date.fromisoformat(d) for d in doc["closed_weekdays"])
    special = {date.fromisoformat(d): (o, c) for d, (o, c) in doc["special"].items()}
    return closed, special, date.fromisoformat(doc["first"]), date.fromisoformat(doc["last"])


def covers(day: date) -> bool:
    """True when the shipped table answers for `day`."""
    _, _, first, last = _table()
    return first <= day <= last


def bounds(day: date) -> tuple[datetime, datetime] | None:
    """(open, close) in UTC of `day`'s regular session, None when closed; `day` must be covered."""
    closed, special, _, _ = _table()
    if day.weekday() >= 5 or day in closed:
        return None
    open_text, close_text = special.get(day, REGULAR)
    return _utc(day, open_text), _utc(day, close_text)


def _utc(day: date, hhmm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), NEW_YORK).astimezone(UTC)


def build(first: date = FIRST, last: date = LAST) -> dict[str, Any]:
    """The table from exchange_calendars (XNYS), as shipped in nyse_sessions.json."""
    import exchange_calendars as xcals
    import pandas as pd

    cal = xcals.get_calendar("XNYS", start=first.isoformat(), end=last.isoformat())
    sched = cal.schedule
    sessions = {ts.date(): (row.open, row.close) for ts, row in sched.iterrows()}
    closed, special = [], {}
    for day in pd.date_range(first, last, freq="D"):
        d = day.date()
        if d.weekday() >= 5:
            if d in sessions:
                raise ValueError(f"{d} is a weekend session: the table cannot hold it")
            continue
        if d not in sessions:
            closed.append(d.isoformat())
            continue
        if any(ts.second or ts.microsecond for ts in sessions[d]):
            raise ValueError(f"{d}: a session bound off the minute")
        o, c = (ts.tz_convert(NEW_YORK).strftime("%H:%M") for ts in sessions[d])
        if (o, c) != REGULAR:
            special[d.isoformat()] = [o, c]
    return {
        "source": f"exchange_calendars {xcals.__version__} XNYS",
        "first": first.isoformat(),
        "last": last.isoformat(),
        "closed_weekdays": closed,
        "special": special,
    }


if __name__ == "__main__":
    print(json.dumps(build(), indent=1))  # the build step: stdout is the data file
