"""A lone strategy's claim goes with its BEGIN and timeouts, in one round trip
(`Session.transaction(begin_with=...)`, issue 17)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from strategy_engine import engine
from strategy_engine.core import calendar
from strategy_engine.core.errors import DatabaseUnavailable
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import Session, connect
from strategy_engine.store import strategies as strat_store
from tests.conftest import seed
from tests.test_exactly_once import T, entry_setup

IDLE = TransactionStatus.IDLE


def _sent(trace: Path) -> list[str]:
    """The statements and Syncs the client sent, in order, as libpq traced them (a message's
    text may span lines: each message begins with its timestamp)."""
    out = []
    for message in re.split(r"\n(?=\d{4}-\d\d-\d\d )", trace.read_text()):
        kind = message.split("\t")[3] if message.count("\t") >= 3 else ""
        if "\tF\t" not in message:
            continue
        if kind == "Sync":
            out.append("sync")
        elif kind in ("Parse", "Query"):
            out.append(message.split('"', 3)[3].rsplit('"', 1)[0] if kind == "Parse" else message)
    return out


def test_begin_with_sends_its_statements_after_the_timeouts_in_the_begins_round_trip(
    db_url: str, tmp_path: Path
) -> None:
    with connect(db_url) as s:
        trace, before, answers = tmp_path / "libpq.trace", s.round_trips, []
        with trace.open("w") as f:
            s.conn.pgconn.trace(f.fileno())
            with s.transaction(
                lock_timeout=1.5,
                idle_timeout=5,
                begin_with=lambda: answers.append(s.execute("select current_setting('lock_timeout')")),
            ):
                assert answers[0].fetchone() == ("1500ms",)  # run after the SET, in the transaction
                assert s.conn.info.transaction_status == TransactionStatus.INTRANS
            s.conn.pgconn.untrace()
        assert s.round_trips - before == 2  # BEGIN with the SET and the statement; COMMIT
        assert s.conn.info.transaction_status == IDLE
    sent = [
        x
        for x in _sent(trace)
        if x == "sync" or "BEGIN" in x or "set_config" in x or "current_setting('lock" in x
    ]
    assert sent[:4] == ["BEGIN", sent[1], "select current_setting('lock_timeout')", "sync"]
    assert "set_config('lock_timeout'" in sent[1]


def test_a_failing_begin_with_statement_rolls_back_and_leaves_the_session_usable(db_url: str) -> None:
    with connect(db_url) as s:
        with (
            pytest.raises(psycopg.errors.DivisionByZero),
            s.transaction(lock_timeout=1, begin_with=lambda: s.execute("select 1 / 0")),
        ):
            s.execute("select 1")  # never reached: the block does not start
        assert s.conn.info.transaction_status == IDLE
        with s.transaction(lock_timeout=1, begin_with=lambda: s.execute("select 2")):
            assert s.fetchone("select 3") == (3,)
        assert s.fetchone("show lock_timeout") == ("0",)  # the SET LOCAL ended with each transaction


def test_a_connection_lost_before_the_begin_is_an_outage(db_url: str) -> None:
    with connect(db_url) as s, connect(db_url) as admin:
        admin.execute("select pg_terminate_backend(%s)", (s.conn.info.backend_pid,))
        with (
            pytest.raises(DatabaseUnavailable),
            s.transaction(lock_timeout=1, begin_with=lambda: s.execute("select 1")),
        ):
            s.execute("select 1")


def test_a_lone_strategys_claim_goes_with_its_begin(session: Session, tmp_path: Path) -> None:
    seed(session, config={"symbols": ["SPY"], "min_flow_premium": 20_000})
    entry_setup(session, ("SPY",), T)
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as f:
        session.conn.pgconn.trace(f.fileno())
        result = engine.tick(session, T, deps=engine.Deps(policy=TickPolicy(max_lag_seconds=0)))
        session.conn.pgconn.untrace()
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED]
    sent = _sent(trace)
    begin = sent.index("BEGIN")
    assert "set_config('lock_timeout'" in sent[begin + 1]
    assert "for update of st skip locked" in sent[begin + 2]  # the claim
    assert sent[begin + 3] == "sync"  # then the wait: one round trip for the three


def test_a_claim_held_elsewhere_answers_busy_at_once_and_writes_nothing(
    session: Session, db_url: str
) -> None:
    sid = seed(session, config={"symbols": ["SPY"], "min_flow_premium": 20_000})
    entry_setup(session, ("SPY",), T)
    quick = engine.Deps(policy=TickPolicy(max_lag_seconds=0, lock_timeout_seconds=30))
    strat_store.ensure_day_rows(session, [sid], calendar.trading_date(T))
    with connect(db_url) as other, other.transaction():
        other.execute("select 1 from strategy_state for update")  # another worker holds the minute
        busy = engine.tick(session, T, deps=quick)  # would wait 30 s if it waited on anything
    assert [r.outcome for r in busy.strategies] == [StrategyOutcome.BUSY]
    assert session.fetchone("select count(*) from paper_trades") == (0,)
    assert session.conn.info.transaction_status == IDLE
