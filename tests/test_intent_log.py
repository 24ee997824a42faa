"""The order path's store on its own: the write-ahead intent log (`store.intents.IntentLog`: what
`gave_up` writes, and that it never raises, saying which intent it could not mark), and the rule
of one broker account per Alpaca account (`store.accounts.check_alpaca_account`)."""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from strategy_engine import engine
from strategy_engine.core.errors import AccountConflict, DatabaseUnavailable
from strategy_engine.core.models import BrokerAccount, OrderIntent, Side
from strategy_engine.store import Session, connect
from strategy_engine.store import accounts as acct_store
from strategy_engine.store.intents import IntentLog
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_alpaca_engine import deps

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


# ---- one broker account per Alpaca account: the refusals, word for word --------------------------


def accounts(session: Session, *names: str) -> list[BrokerAccount]:
    return [BrokerAccount(acct_store.ensure_account(session, n, "alpaca"), n, "alpaca") for n in names]


def test_an_answer_without_an_account_number_is_refused(session: Session) -> None:
    (a,) = accounts(session, "alpaca-a")
    with pytest.raises(AccountConflict) as got:
        acct_store.check_alpaca_account(session, a, None)
    assert str(got.value) == "broker account 'alpaca-a': Alpaca answered without an account number"


def test_default_credentials_that_now_reach_another_account_are_refused_by_name(session: Session) -> None:
    (a,) = accounts(session, "alpaca-a")
    acct_store.check_alpaca_account(session, a, "PA3FIRST")  # first use: recorded
    with pytest.raises(AccountConflict) as got:
        acct_store.check_alpaca_account(session, a, "PA3OTHER")
    assert str(got.value) == (
        "broker account 'alpaca-a' is Alpaca account PA3FIRST, but its credentials (default)"
        " now reach PA3OTHER: refused"
    )


def test_an_account_number_another_row_holds_is_refused_naming_that_row(session: Session) -> None:
    a, b = accounts(session, "alpaca-a", "alpaca-b")
    acct_store.check_alpaca_account(session, a, "PA3SHARED")
    with pytest.raises(AccountConflict) as got:
        acct_store.check_alpaca_account(session, b, "PA3SHARED")
    assert str(got.value) == (
        "broker account 'alpaca-b' reaches Alpaca account PA3SHARED, already used by 'alpaca-a':"
        " give it its own credentials (credentials_ref); refused"
    )


def test_two_first_uses_of_one_number_at_once_the_second_is_refused(session: Session, db_url: str) -> None:
    """b's first use reads no other row holding the number (a's is not committed yet), then its
    write waits on the unique index until a's commits: refused as well, nothing written."""
    a, b = accounts(session, "alpaca-a", "alpaca-b")
    with connect(db_url) as other, other.transaction():
        acct_store.check_alpaca_account(other, a, "PA3RACE")  # written, not committed
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with connect(db_url) as s2, s2.transaction():
                    acct_store.check_alpaca_account(s2, b, "PA3RACE")
            except BaseException as exc:
                errors.append(exc)

        th = threading.Thread(target=second)
        th.start()
        th.join(0.5)  # it waits on a's uncommitted row
    th.join(10)
    assert [str(e) for e in errors] == [
        "broker account 'alpaca-b' reaches Alpaca account PA3RACE, already used by 'another broker"
        " account': give it its own credentials (credentials_ref); refused"
    ]
    assert session.fetchall("select name, alpaca_account_number from broker_accounts order by 1") == [
        ("alpaca-a", "PA3RACE"),
        ("alpaca-b", None),
    ]


def test_open_ahead_connects_before_the_first_write(session: Session) -> None:
    """The intent connection is opened on a thread as soon as asked, so an order's intent does
    not wait for a connection to be set up."""
    log = IntentLog(session)
    try:
        log.open_ahead()
        for _ in range(200):  # bounded: 10 s
            if backends(session) == 1:
                break
            time.sleep(0.05)
        assert backends(session) == 1  # before any write
    finally:
        log.close()
        log.close()  # closing twice (nested cleanups) is harmless
    for _ in range(200):
        if backends(session) == 0:
            break
        time.sleep(0.05)
    assert backends(session) == 0  # closed with the log


def test_opening_ahead_again_keeps_the_one_connection_and_close_closes_it(session: Session) -> None:
    """`open_ahead` asked again while a connection is opening or open (each invocation asks)
    opens no second one: the intent is written on the one connection, and `close` closes it,
    none left for the garbage collector to drop open (psycopg's ResourceWarning)."""
    log = IntentLog(session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            log.open_ahead()
            log.open_ahead()
            written(session, log, "se-ahead-1")
            log.open_ahead()
        finally:
            log.close()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    for _ in range(200):  # bounded: 10 s
        if backends(session) == 0:
            break
        time.sleep(0.05)
    assert backends(session) == 0
    assert session.fetchall("select client_order_id, status from paper_trades") == [("se-ahead-1", "intent")]


def test_a_connection_that_failed_to_open_ahead_is_nobodys_concern_until_it_is_used(
    session: Session, server_url: str
) -> None:
    """The database refuses new connections: the one opened ahead fails, and closing the log
    (once or twice) says nothing, since no intent needed it. The next write connects again and
    raises DatabaseUnavailable, the outage's own error."""
    (name,) = session.fetchone("select current_database()") or ("",)
    log = IntentLog(session)
    admin = connect(server_url)
    admin.execute(f'alter database "{name}" allow_connections false')
    try:
        log.open_ahead()
        log.close()
        log.close()
        with pytest.raises(DatabaseUnavailable):
            log.write(None, 0, "manual", T, [OrderIntent("SPY", Side.BUY, 1.0, 100.0, "se-never-sent")])
    finally:
        admin.execute(f'alter database "{name}" allow_connections true')
        admin.close()
        log.close()
    assert backends(session) == 0
    assert session.fetchone("select count(*) from paper_trades") == (0,)


def test_one_log_serves_threads_at_once_each_transaction_whole(session: Session) -> None:
    """Eight threads write, void and mark intents through one log at once (the accounts of an
    invocation share it): every operation runs whole on the one side connection, none meets
    another's statements (psycopg would refuse a second command in flight, or a BEGIN inside
    another's transaction), and every row ends as its own thread left it."""
    strategy = seed(session, account="alpaca-x", broker="alpaca")
    row = session.fetchone("select id from broker_accounts where name = 'alpaca-x'")
    assert row is not None
    log = IntentLog(session)
    start, errors = threading.Barrier(8, timeout=10), []

    def work(k: int) -> None:
        try:
            start.wait()
            for n in range(6):
                cid = f"se-t{k}-{n}"
                assert log.write(
                    strategy, row[0], "strategy", T, [OrderIntent("SPY", Side.BUY, 1.0, 100.0, cid)]
                ) == {cid}
                if n % 3 == 1:
                    log.void([cid], f"void by {k}")
                elif n % 3 == 2:
                    log.gave_up(cid, f"gave up by {k}")
        except BaseException as exc:  # the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    finally:
        log.close()
    assert errors == []
    got = {
        r[0]: (r[1], r[2])
        for r in session.fetchall("select client_order_id, status, error from paper_trades")
    }
    want = {
        f"se-t{k}-{n}": [("intent", None), ("void", f"void by {k}"), ("intent", f"gave up by {k}")][n % 3]
        for k in range(8)
        for n in range(6)
    }
    assert got == want
    assert backends(session) == 0


def test_a_lost_side_connection_fails_the_write_that_met_it_and_the_next_reconnects(
    session: Session, log: IntentLog
) -> None:
    """The side connection's backend is terminated between two accounts' intents: the write that
    meets the dead connection raises DatabaseUnavailable (its order is not sent) and leaves no
    row; the next write, another account's, opens a new connection and commits."""
    written(session, log, "se-before-the-kill")
    (killed,) = session.fetchone(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where datname = current_database() and pid <> pg_backend_pid()"
    ) or (False,)
    assert killed
    account = session.fetchone("select id from broker_accounts where name = 'alpaca-x'")
    assert account is not None
    with pytest.raises(DatabaseUnavailable):
        log.write(None, account[0], "manual", T, [OrderIntent("SPY", Side.BUY, 1.0, 100.0, "se-met-it")])
    assert log.write(
        None, account[0], "manual", T, [OrderIntent("QQQ", Side.BUY, 1.0, 100.0, "se-next")]
    ) == {"se-next"}
    assert sorted(r[0] for r in session.fetchall("select client_order_id from paper_trades")) == [
        "se-before-the-kill",
        "se-next",
    ]


def test_a_side_connection_left_inside_a_transaction_is_not_written_on(
    session: Session, log: IntentLog, db_url: str
) -> None:
    """An operation cut short (an interrupt between its BEGIN and COMMIT) leaves the side
    connection inside a transaction: the next account's intent must not become a savepoint of
    it, uncommitted while its order is sent. The log closes that connection (rolling it back)
    and commits the intent on a new one, visible to any other connection at once."""
    written(session, log, "se-first")
    side = log._session()
    side.conn.execute("begin")
    side.conn.execute("update paper_trades set error = 'half done' where client_order_id = 'se-first'")
    account = session.fetchone("select id from broker_accounts where name = 'alpaca-x'")
    assert account is not None
    assert log.write(
        None, account[0], "manual", T, [OrderIntent("QQQ", Side.BUY, 1.0, 100.0, "se-next")]
    ) == {"se-next"}
    assert side.conn.closed
    with connect(db_url) as other:
        assert other.fetchall("select client_order_id, error from paper_trades order by 1") == [
            ("se-first", None),
            ("se-next", None),
        ]


def backends(session: Session) -> int:
    row = session.fetchone(
        "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
    )
    return int(row[0]) if row else -1


def test_a_manual_intent_reconciled_in_a_strategys_run_is_no_decision_of_the_strategy(
    session: Session,
) -> None:
    """A manual order whose minute died after its POST (row `intent`, no strategy) is settled by
    the next strategy run on the account: its row takes the broker's answer, and it is neither a
    decision of that strategy nor counted in its day. The strategy's own intent, left a minute
    later, is settled in the same run (after the manual one: oldest first) and is its decision."""
    with FakeAlpaca() as fake:
        strategy = seed(session, name="quiet", account="alpaca-x", broker="alpaca", active=False)
        row = session.fetchone("select id from broker_accounts where name = 'alpaca-x'")
        assert row is not None
        manual = OrderIntent("SPY", Side.BUY, 2.0, 100.0, "se-m-manual00000000000000")
        own = OrderIntent("IWM", Side.BUY, 1.0, 100.0, "se-own000000000000000000")
        log = IntentLog(session)
        try:
            assert log.write(None, row[0], "manual", T, [manual]) == {manual.client_order_id}
            assert log.write(strategy, row[0], "strategy", T + timedelta(minutes=1), [own]) == {
                own.client_order_id
            }
        finally:
            log.close()
        session.execute("update paper_trades set updated_at = now() - interval '1 hour'")  # past in flight
        fake.set_policy("instant")
        for o in (manual, own):
            fake.place(
                {
                    "symbol": o.symbol,
                    "side": "buy",
                    "qty": str(int(o.qty)),
                    "client_order_id": o.client_order_id,
                }
            )
        result = engine.tick(session, T + timedelta(minutes=2), deps=deps(fake))
        assert [(r.strategy, r.reconciled) for r in result.strategies] == [("quiet", 1)]
        assert session.fetchall("select client_order_id, status from paper_trades order by 1") == [
            (manual.client_order_id, "filled"),
            (own.client_order_id, "filled"),
        ]
        assert session.fetchall("select symbol from strategy_logs where reason = 'reconciled'") == [("IWM",)]
        assert session.fetchone("select trades_today from strategy_state") == (1,)
