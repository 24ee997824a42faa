"""The two ways decisions reach `strategy_logs` store the same values.

A few rows go as one INSERT the tick pipelines with its other writes (`journal.write_decisions`,
at most PIPELINED_DECISIONS rows); more go by COPY. Both must read every value through the
column's own input function: the same rows, written each way, into our table and into one an
owner made with other types (varchar, an enum, json, float8), read back as the same text.
Rows are written by hand; what each column must read back is spelled out below.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from strategy_engine.core.models import Action, Decision, Outcome, Signal
from strategy_engine.store import Session, journal
from tests.conftest import seed

T = datetime(2025, 6, 13, 14, 30, tzinfo=UTC)
RUN = uuid.UUID("00000000-0000-4000-8000-000000000017")
COLUMNS = ", ".join(f"{c}::text" for c in journal.LOG_COLUMNS)


def _rows(sid: Any) -> list[tuple[Any, ...]]:
    """Five rows whose values each path could spell differently."""
    payload = json.dumps({"note": 'quote " backslash \\ tab \t é 株', "n": 0.1 + 0.2, "nested": [1, None]})
    east = timezone(timedelta(hours=-4))
    return [
        (RUN, None, "live", sid, T, "SPY", "buy", 0.1 + 0.2, "flow_up", None, "ordered", "cid-1", payload),
        (RUN, None, "live", sid, T, "QQQ", "hold", 0.0, "no_signal", None, "held", None, None),
        (RUN, None, "live", sid, T.astimezone(east), "IWM", "sell", 1e-10, "it's", "cool_down", "blocked", None, "{}"),
        (RUN, None, "live", sid, T, "DIA", "buy", 12345678.125, "flow_up", "max_notional_per_trade", "blocked", None,
         json.dumps({"big": 1e300, "small": 5e-324})),
        (RUN, None, "live", sid, T, "X\u00e9", "buy", 3, "a\nb", None, "failed", None, json.dumps(["text"])),
    ]  # fmt: skip


def _written(s: Session, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    s.execute("delete from strategy_logs")
    journal.write_decisions(s, rows)
    return s.fetchall(f"select {COLUMNS} from strategy_logs order by id")


def _both(s: Session, rows: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(as the INSERT stores them, as COPY stores them): COPY given enough copies to be used."""
    copies = journal.PIPELINED_DECISIONS // len(rows) + 1
    assert not journal.pipelined(rows * copies) and journal.pipelined(rows)
    inserted = _written(s, rows)
    copied = _written(s, rows * copies)[: len(rows)]
    return inserted, copied


def test_the_insert_and_copy_store_the_same_text_in_our_table(session: Session) -> None:
    sid = seed(session)
    inserted, copied = _both(session, _rows(sid))
    assert inserted == copied
    # spelled out: a float reads back as the same float, a time in UTC, the payload as JSON
    assert inserted[0][7] == "0.30000000000000004"
    assert inserted[2][4] == "2025-06-13 14:30:00+00"
    assert inserted[2][7] == "1e-10" or float(inserted[2][7]) == 1e-10
    assert json.loads(inserted[0][12])["note"] == 'quote " backslash \\ tab \t é 株'
    assert inserted[1][12] is None and inserted[1][9] is None and inserted[1][1] is None
    assert inserted[4][12] == '["text"]'


@pytest.mark.parametrize("payload_type", ["json", "text"])
def test_the_insert_and_copy_store_the_same_text_in_a_table_of_other_types(
    session: Session, payload_type: str
) -> None:
    """An owner's table: enum action and outcome, varchar text, a json or text payload (kept as
    the very text sent: key order, escapes), float8 qty."""
    sid = seed(session)
    session.execute(
        "alter table strategy_logs drop constraint if exists strategy_logs_outcome_check;"
        "alter table strategy_logs drop constraint if exists strategy_logs_action_check;"
        "create type public.log_action as enum ('buy', 'sell', 'hold');"
        "create type public.log_outcome as enum ('held', 'blocked', 'ordered', 'failed', 'reconciled');"
        "alter table strategy_logs alter column action type public.log_action using action::public.log_action,"
        " alter column outcome type public.log_outcome using outcome::public.log_outcome,"
        " alter column symbol type varchar(12), alter column reason type varchar(200),"
        f" alter column signal_payload type {payload_type}, alter column qty type float8"
    )
    inserted, copied = _both(session, _rows(sid))
    assert inserted == copied
    assert [r[6] for r in inserted] == ["buy", "hold", "sell", "buy", "buy"]
    assert inserted[0][7] == "0.30000000000000004"
    assert inserted[0][12] == _rows(sid)[0][12]  # the payload's own text, byte for byte


@pytest.mark.parametrize(
    ("qty", "numeric", "float8"),
    [
        (float("nan"), "NaN", "NaN"),
        (float("inf"), "Infinity", "Infinity"),
        (float("-inf"), "-Infinity", "-Infinity"),
    ],
)
def test_a_quantity_that_is_no_number_is_stored_as_the_column_spells_it(
    session: Session, qty: float, numeric: str, float8: str
) -> None:
    """Neither path refuses a non-finite quantity (the row is the record of what was decided)."""
    sid = seed(session)
    row = (RUN, None, "live", sid, T, "SPY", "hold", qty, "no_signal", None, "held", None, None)
    inserted, copied = _both(session, [row])
    assert inserted == copied and inserted[0][7] == numeric
    session.execute("alter table strategy_logs alter column qty type float8")
    inserted, copied = _both(session, [row])
    assert inserted == copied and inserted[0][7] == float8


def test_no_rows_is_no_statement(session: Session) -> None:
    before = session.statements
    journal.write_decisions(session, [])
    assert session.statements == before


def test_a_batch_at_the_limit_is_one_pipelined_insert(session: Session) -> None:
    sid = seed(session)
    rows = _rows(sid)[:1] * journal.PIPELINED_DECISIONS
    before = (session.statements, session.round_trips)
    with session.pipeline():
        journal.write_decisions(session, rows)
        count = session.execute("select count(*) from strategy_logs")
    assert count.fetchone() == (journal.PIPELINED_DECISIONS,)
    assert (session.statements - before[0], session.round_trips - before[1]) == (2, 1)


@pytest.mark.parametrize("payload_type", ["jsonb", "json", "text"])
def test_a_nul_in_a_decisions_payload_is_stored_by_both_ways(session: Session, payload_type: str) -> None:
    """A broker's error text (or a signal input) with a NUL: PostgreSQL's json parser refuses the
    escape \\u0000 as text and jsonb refuses it outright, so the minute's writes would fail (the
    INSERT even where COPY stores it, in a json or text column). The payload spells it U+FFFD;
    a backslash before "u0000" stays a backslash."""
    sid = seed(session)
    if payload_type != "jsonb":
        session.execute(f"alter table strategy_logs alter column signal_payload type {payload_type}")
    signal = Signal("SPY", Action.HOLD, 0.0, "no_signal", {"input\x00key": "a\x00b", "path": "c:\\u0000"})
    d = Decision(T, signal, None, None, Outcome.FAILED, error="rejected: \x00\x00 broker text")
    row = journal.decision_row(d, sid, engine_run_id=RUN)
    inserted, copied = _both(session, [row])
    assert inserted == copied
    assert json.loads(inserted[0][12]) == {
        "input\ufffdkey": "a\ufffdb",
        "path": "c:\\u0000",
        "error": "rejected: \ufffd\ufffd broker text",
    }


@pytest.mark.parametrize("payload", ['"text"', ' {"a": 1} ', "1.50"])
def test_a_payload_that_is_no_object_goes_by_copy_and_is_stored_as_sent(
    session: Session, payload: str
) -> None:
    """The INSERT would store a JSON string unquoted and a padded payload unpadded in a text
    column: such a row (no `decision_json` makes one) goes by COPY, which stores the text sent."""
    sid = seed(session)
    session.execute("alter table strategy_logs alter column signal_payload type text")
    row = (RUN, None, "live", sid, T, "SPY", "hold", 0.0, "no_signal", None, "held", None, payload)
    assert not journal.pipelined([row])
    assert _written(session, [row])[0][12] == payload


def test_both_ways_write_our_table_whatever_the_search_path(session: Session) -> None:
    """A role whose search_path finds another schema's strategy_logs first: the INSERT and the
    COPY both name public.strategy_logs, so neither lands elsewhere."""
    sid = seed(session)
    session.execute(
        "create schema other; create table other.strategy_logs (like public.strategy_logs including all);"
        "set search_path = other, public"
    )
    rows = _rows(sid)
    journal.write_decisions(session, rows)  # the INSERT
    journal.write_decisions(session, rows * (journal.PIPELINED_DECISIONS // len(rows) + 1))  # COPY
    assert session.fetchone("select count(*) from other.strategy_logs") == (0,)
    count = session.fetchone("select count(*) from public.strategy_logs")
    assert count == (len(rows) * (journal.PIPELINED_DECISIONS // len(rows) + 2),)


class _Str(str):
    def __str__(self) -> str:
        return "not-the-value"


class _Uuid(uuid.UUID):
    def __str__(self) -> str:
        return "not-the-uuid"


def _odd_values() -> list[tuple[str, int, Any]]:
    """(id, column index, value): values whose type each path could spell differently."""
    import numpy as np  # the backtest's arrays hand numpy scalars to anything downstream

    naive = T.replace(tzinfo=None, microsecond=123456)
    return [
        ("np.float64", 7, np.float64(0.1)),
        ("np.float64-nan", 7, np.float64("nan")),
        ("np.float32", 7, np.float32(0.1)),
        ("np.int64", 7, np.int64(7)),
        ("decimal", 7, __import__("decimal").Decimal("1E+1")),
        ("-0.0", 7, -0.0),
        ("1e-320", 7, 1e-320),
        ("huge-int", 7, 10**40),
        ("naive-datetime", 4, naive),
        ("tz-datetime", 4, T.astimezone(timezone(timedelta(hours=5, minutes=30)))),
        ("str-subclass", 8, _Str("flow_up")),
        ("uuid-subclass", 0, _Uuid(int=RUN.int)),
    ]


@pytest.mark.parametrize(
    ("column", "value"), [v[1:] for v in _odd_values()], ids=[v[0] for v in _odd_values()]
)
def test_an_odd_value_type_is_stored_the_same_text_by_both_ways(
    session: Session, column: int, value: Any
) -> None:
    """The INSERT's JSON and COPY's text of a value of a subclass or numpy type: the same text
    stored, or the same refusal."""
    sid = seed(session)
    row = list(_rows(sid)[0])
    row[column] = value
    session.execute("set timezone to 'America/New_York'")  # a naive time reads in the session's zone
    inserted, copied = _both(session, [tuple(row)])
    assert inserted == copied


def test_an_integer_strategy_id_is_stored_the_same_by_both_ways(session: Session) -> None:
    sid = seed(session)
    session.execute("alter table strategy_logs drop constraint if exists strategy_logs_strategy_id_fkey")
    session.execute("alter table strategy_logs alter column strategy_id type text using strategy_id::text")
    row = (*_rows(sid)[0][:3], 42, *_rows(sid)[0][4:])
    inserted, copied = _both(session, [row])
    assert inserted == copied and inserted[0][3] == "42"


def test_a_uuid_and_a_time_in_text_columns_are_the_same_text_by_both_ways(session: Session) -> None:
    """An owner's table keeping the run id and the minute as text: COPY sends a UUID as 32 hex
    digits and a time with a space (psycopg's dumpers); the INSERT must send the same text."""
    sid = seed(session)
    session.execute(
        "alter table strategy_logs alter column engine_run_id type text using engine_run_id::text,"
        " alter column decision_minute type text using decision_minute::text"
    )
    inserted, copied = _both(session, _rows(sid))
    assert inserted == copied
    assert inserted[0][0] == RUN.hex and inserted[0][4] == "2025-06-13 14:30:00+00:00"
