"""The Session on the real server: its counters, its result formats, its error translation.

The counters are what the statement budget is measured with (tests/test_tick.py, the
benchmarks): here they are pinned on a known sequence, counted by hand from `Session`'s rules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from strategy_engine.core.errors import Busy, DatabaseUnavailable
from strategy_engine.store import Session, connect

BUSY = "^busy: another worker holds the lock$"


def counts(s: Session) -> tuple[int, int, int]:
    return s.statements, s.round_trips, s.transactions


def test_the_counters_count_statements_round_trips_and_outermost_transactions(session: Session) -> None:
    s = session
    assert counts(s) == (0, 0, 0)  # connecting sends no statement of ours
    s.execute("create temporary table t (v int)")
    assert s.fetchone("select 1") == (1,)
    assert s.fetchall("select 2") == [(2,)]
    assert counts(s) == (3, 3, 0)  # one statement, one wait each
    with s.pipeline():
        cursors = [s.execute("select %s::int", (k,)) for k in range(3)]
        with s.pipeline():  # a nested block is part of the outer one's wait
            s.execute("insert into t values (1)")
    assert [c.fetchone() for c in cursors] == [(0,), (1,), (2,)]
    assert counts(s) == (7, 4, 0)  # four statements, one wait
    with s.transaction():  # BEGIN and COMMIT
        s.execute("insert into t values (2)")
        with s.transaction():  # SAVEPOINT and RELEASE: not another outermost transaction
            s.execute("insert into t values (3)")
    assert counts(s) == (9, 4 + 2 + 1 + 2 + 1, 1)
    with s.transaction(lock_timeout=5.0):  # the timeouts: a statement sent with the BEGIN
        assert s.copy_in("t", ("v",), [(4,), (5,), (6,)], schema="pg_temp") == 3  # one statement, one wait
    assert counts(s) == (11, 10 + 2 + 1, 2)
    assert s.fetchall("select v from t order by v") == [(k,) for k in range(1, 7)]
    assert counts(s) == (12, 14, 2)


def test_copy_in_quotes_the_table_and_the_columns(session: Session) -> None:
    session.execute('create temporary table "Odd Table" ("Mixed Col" int, "select" text)')
    rows = [(1, "a"), (2, None)]
    assert session.copy_in("Odd Table", ("Mixed Col", "select"), rows, schema="pg_temp") == 2
    assert session.fetchall('select "Mixed Col", "select" from "Odd Table" order by 1') == rows


def test_results_are_text_unless_binary_is_asked_for(session: Session) -> None:
    """Text results go through the session's loaders (numeric reads as float) and parse what the
    server prints: under `extra_float_digits = 0` a float8 prints 15 significant digits. Binary
    results are the server's doubles, bit for bit (what market.recent_closes relies on)."""
    x = 135.58 / 3  # 45.193333333333335: 17 significant digits
    session.execute("set extra_float_digits = 0")
    q = "select %s::float8, 1.5::numeric"
    for row in (session.execute(q, (x,)).fetchone(), *session.fetchall(q, (x,))):
        assert row == (45.1933333333333, 1.5)
        assert type(row[1]) is float  # the session's numeric loader (text only)
    binary_rows = (session.execute(q, (x,), binary=True).fetchone(), *session.fetchall(q, (x,), binary=True))
    for row in binary_rows:
        assert row is not None and row[0] == x != 45.1933333333333


def test_a_statement_or_copy_waiting_past_the_lock_timeout_is_busy(db_url: str, session: Session) -> None:
    session.execute("create table held (v int)")
    with connect(db_url) as other, other.transaction():
        other.execute("lock table held in access exclusive mode")
        with pytest.raises(Busy, match=BUSY), session.transaction(lock_timeout=0.05):
            session.execute("select * from held")
        with pytest.raises(Busy, match=BUSY), session.transaction(lock_timeout=0.05):
            session.copy_in("held", ("v",), [(1,)])
    assert session.fetchall("select v from held") == []


def _select(s: Session) -> object:
    return s.execute("select 1")


def _copy(s: Session) -> object:
    return s.copy_in("kept", ("v",), [(1,)])


@pytest.mark.parametrize("send", [_select, _copy], ids=["execute", "copy_in"])
def test_a_lost_connection_is_unavailable_with_the_drivers_words_in_the_detail(
    db_url: str, session: Session, send: Callable[[Session], object]
) -> None:
    """The message names no driver text; the detail (logged as `dependency unavailable`'s
    `detail`, what an operator reads) keeps the driver's first line."""
    session.execute("create table kept (v int)")
    pid = session.fetchone("select pg_backend_pid()")
    with connect(db_url) as other:
        assert other.fetchone("select pg_terminate_backend(%s)", pid) == (True,)
    with pytest.raises(DatabaseUnavailable) as caught:
        send(session)
    assert str(caught.value) == "database unavailable"
    assert "terminat" in (caught.value.detail or "")
