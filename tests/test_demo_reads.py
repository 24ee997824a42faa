"""The demo's reads, direct and fast (test_demo.py runs whole demos): its summary's decision
counts, its examples of blocked decisions, and the session lock that keeps two demos apart.

Each test writes its own `strategy_logs` rows by hand, including rows that must not count
(another strategy's, the backfill's, decisions that were not blocked); expectations are counted
by hand from those rows.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from strategy_engine.core.models import RowId
from strategy_engine.store import Session, connect, journal, queries
from tests.conftest import seed


def _t(hhmm: str) -> datetime:
    hh, mm = hhmm.split(":")
    return datetime(2025, 6, 13, int(hh), int(mm), tzinfo=UTC)


def _row(
    sid: RowId,
    hhmm: str,
    symbol: str,
    *,
    reason: str = "flow_up",
    outcome: str = "blocked",
    code: str | None = None,
    qty: float = 1.0,
    mode: str = "live",
    note: str = "",
) -> tuple[Any, ...]:
    """A `strategy_logs` row in `journal.LOG_COLUMNS` order; `note` marks its payload."""
    action = "hold" if outcome == "held" else "buy"
    payload = json.dumps({"note": note}) if note else None
    run = uuid.uuid4() if mode == "live" else None
    return (run, None, mode, sid, _t(hhmm), symbol, action, qty, reason, code, outcome, None, payload)


def test_decision_counts_groups_one_strategys_live_decisions_by_reason_outcome_and_code(
    session: Session,
) -> None:
    a = seed(session, name="a", account="sim-a")
    b = seed(session, name="b", account="sim-b")
    rows = [
        _row(a, "14:00", "SPY", outcome="ordered"),
        _row(a, "14:01", "QQQ", outcome="ordered"),
        _row(a, "14:02", "SPY", code="max_position_size"),
        _row(a, "14:03", "SPY", code="max_position_size"),
        _row(a, "14:04", "QQQ", code="max_position_size"),
        _row(a, "14:05", "SPY", code="cool_down"),
        _row(a, "14:06", "SPY", reason="no_signal", outcome="held", qty=0),
        _row(a, "14:07", "QQQ", reason="no_signal", outcome="held", qty=0),
        _row(a, "14:08", "IWM", reason="no_signal", outcome="held", qty=0),
        _row(a, "14:09", "SPY", reason="flow_down", outcome="failed"),
        # not counted: the backfill's decisions of the same strategy, another strategy's
        *[_row(a, "14:10", s, code="cool_down", mode="backfill") for s in ("SPY", "QQQ", "IWM")],
        _row(a, "14:11", "SPY", reason="flow_down", outcome="ordered", mode="backfill"),
        *[_row(b, "14:12", s, outcome="ordered") for s in ("SPY", "QQQ")],
        _row(b, "14:13", "SPY", code="max_daily_trades"),
    ]
    journal.write_decisions(session, rows)

    # ordered by reason, outcome, risk_code (a missing code sorts last)
    assert journal.decision_counts(session, a) == [
        ("flow_down", "failed", None, 1),
        ("flow_up", "blocked", "cool_down", 1),
        ("flow_up", "blocked", "max_position_size", 3),
        ("flow_up", "ordered", None, 2),
        ("no_signal", "held", None, 3),
    ]
    assert journal.decision_counts(session, b) == [
        ("flow_up", "blocked", "max_daily_trades", 1),
        ("flow_up", "ordered", None, 2),
    ]


def _example(code: str, n: int, hhmm: str, symbol: str, qty: float, note: str) -> dict[str, Any]:
    return {
        "risk_code": code,
        "n": n,
        "symbol": symbol,
        "qty": qty,
        "minute": _t(hhmm),
        "payload": {"note": note},
    }


def test_blocked_examples_are_the_top_codes_each_with_its_count_and_latest_blocked_decision(
    session: Session,
) -> None:
    a = seed(session, name="a", account="sim-a")
    b = seed(session, name="b", account="sim-b")
    rows = [
        # cool_down x4; latest 15:10 SPY
        _row(a, "14:45", "SPY", code="cool_down", qty=3, note="cd1"),
        _row(a, "14:50", "QQQ", code="cool_down", qty=4, note="cd2"),
        _row(a, "15:10", "SPY", code="cool_down", qty=5, note="cd3"),
        _row(a, "15:00", "IWM", code="cool_down", qty=6, note="cd4"),
        # max_position_size x3; two at the latest minute 15:05: the first symbol, AAPL
        _row(a, "15:00", "SPY", code="max_position_size", qty=7, note="mp1"),
        _row(a, "15:05", "QQQ", code="max_position_size", qty=8, note="mp2"),
        _row(a, "15:05", "AAPL", code="max_position_size", qty=2, note="mp3"),
        # max_daily_trades x2 and max_open_positions x2 tie for third: the first code wins
        _row(a, "14:30", "SPY", code="max_daily_trades", qty=1.5, note="dt1"),
        _row(a, "14:20", "QQQ", code="max_daily_trades", qty=9, note="dt2"),
        _row(a, "14:31", "SPY", code="max_open_positions", qty=10, note="op1"),
        _row(a, "14:32", "QQQ", code="max_open_positions", qty=11, note="op2"),
        # max_notional_per_trade x1: fifth
        _row(a, "14:33", "SPY", code="max_notional_per_trade", qty=12, note="nt1"),
        # not blocked, or not live, or not this strategy's: neither counted nor an example
        _row(a, "15:20", "SPY", outcome="ordered", qty=13, note="ord"),
        _row(a, "15:21", "QQQ", outcome="failed", code="max_daily_trades", qty=14, note="fail"),
        *[
            _row(a, "15:30", "ZZZ", code=c, qty=15, mode="backfill", note="bf")
            for c in ("max_open_positions", "max_open_positions", "max_open_positions", "cool_down")
        ],
        *[
            _row(b, "15:40", s, code="max_open_positions", qty=16, note="b")
            for s in ("SPY", "QQQ", "IWM", "DIA", "AAPL")
        ],
        _row(b, "15:41", "SPY", code="max_daily_trades", qty=17, note="b2"),
    ]
    journal.write_decisions(session, rows)

    # the demo asks for the default: the top three codes, ordered by code
    assert queries.blocked_examples(session, a) == [
        _example("cool_down", 4, "15:10", "SPY", 5.0, "cd3"),
        _example("max_daily_trades", 2, "14:30", "SPY", 1.5, "dt1"),
        _example("max_position_size", 3, "15:05", "AAPL", 2.0, "mp3"),
    ]
    assert queries.blocked_examples(session, a, top=1) == [
        _example("cool_down", 4, "15:10", "SPY", 5.0, "cd3")
    ]
    assert queries.blocked_examples(session, b, top=5) == [
        _example("max_daily_trades", 1, "15:41", "SPY", 17.0, "b2"),
        _example("max_open_positions", 5, "15:40", "AAPL", 16.0, "b"),
    ]
    c = seed(session, name="c", account="sim-c")
    assert queries.blocked_examples(session, c) == []


def _gone(watcher: Session, pid: int) -> bool:
    """Whether the server backend `pid` has ended (its session locks are released before it
    leaves pg_stat_activity), waiting for it up to about 10 s: a closed connection's backend
    exits asynchronously."""
    for _ in range(200):
        if watcher.fetchone("select 1 from pg_stat_activity where pid = %s", (pid,)) is None:
            return True
        time.sleep(0.05)
    return False


def test_session_lock_is_held_by_one_connection_until_it_releases_or_closes(db_url: str) -> None:
    name, other = f"demo-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    with connect(db_url) as second, connect(db_url) as watcher:
        first = connect(db_url)
        try:
            assert queries.try_session_lock(first, name) is True
            assert queries.try_session_lock(second, name) is False  # a demo is running
            assert queries.try_session_lock(second, other) is True  # another name is free
            # it outlives the statement: a session lock, not a transaction's
            assert queries.try_session_lock(second, name) is False
            row = first.fetchone("select pg_advisory_unlock(hashtext(%s))", (name,))
            assert row == (True,)
            assert queries.try_session_lock(second, name) is True  # released: free again
            assert queries.try_session_lock(first, name) is False  # now the second holds it
            row = second.fetchone("select pg_advisory_unlock(hashtext(%s))", (name,))
            assert row == (True,)
            assert queries.try_session_lock(first, name) is True
            pid = first.conn.info.backend_pid
        finally:
            first.close()
        assert _gone(watcher, pid)
        assert queries.try_session_lock(second, name) is True  # its holder closed: free again
