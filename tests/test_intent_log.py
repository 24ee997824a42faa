"""The write-ahead intent log on its own (`store.intents.IntentLog`): what `gave_up` writes, and
that it never raises, saying which intent it could not mark."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from strategy_engine.core.models import OrderIntent, Side
from strategy_engine.store import Session
from strategy_engine.store.intents import IntentLog
from tests.conftest import seed

T = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)


@pytest.fixture
def log(session: Session) -> Iterator[IntentLog]:
    intents = IntentLog(session)
    yield intents
    intents.close()


def written(session: Session, log: IntentLog, cid: str) -> None:
    strategy = seed(session, account="alpaca-x", broker="alpaca")
    row = session.fetchone("select id from broker_accounts where name = 'alpaca-x'")
    assert row is not None
    intent = OrderIntent("SPY", Side.BUY, 1.0, 100.0, cid)
    assert log.write(strategy, row[0], "strategy", T, [intent]) == {cid}


def test_gave_up_marks_the_intent_with_its_error_cut_to_500_characters(
    session: Session, log: IntentLog
) -> None:
    written(session, log, "se-000000000000000000000001")
    why = "ConnectionError: " + "x" * 600
    log.gave_up("se-000000000000000000000001", why)
    assert session.fetchone("select status, error from paper_trades") == ("intent", why[:500])


def test_gave_up_leaves_a_row_the_broker_answered_for_alone(session: Session, log: IntentLog) -> None:
    written(session, log, "se-000000000000000000000002")
    session.execute("update paper_trades set status = 'filled'")
    log.gave_up("se-000000000000000000000002", "ReadTimeout")
    assert session.fetchone("select status, error from paper_trades") == ("filled", None)


def test_gave_up_never_raises_and_says_which_intent_it_could_not_mark(
    session: Session, log: IntentLog, caplog: pytest.LogCaptureFixture
) -> None:
    written(session, log, "se-000000000000000000000003")
    side = log._session()
    session.execute("select pg_terminate_backend(%s)", (side.conn.info.backend_pid,))
    caplog.set_level(logging.WARNING, logger="strategy_engine.store.intents")
    log.gave_up("se-000000000000000000000003", "ReadTimeout")  # its connection is gone: no raise
    said = [(r.name, r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING]
    assert said == [
        ("strategy_engine.store.intents", "could not mark intent se-000000000000000000000003 given up")
    ]
    assert session.fetchone("select error from paper_trades") == (None,)
