"""`Session.commit_in_pipeline`: a strategy-minute's COMMIT rides with its writes (issue 17).

The COMMIT is queued in the writes' pipeline, so the minute's last round trip carries both; it
runs only if every statement before it did, and whatever fails leaves nothing written and the
session ready for the next transaction. It is refused anywhere but the outermost level of a
transaction given a timeout, inside a pipeline. (kill -9 around it, and failing writes in a
whole tick: tests/test_attacks_atkJ.py.)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg
import pytest

from strategy_engine.core.errors import DatabaseUnavailable
from strategy_engine.store import connect
from strategy_engine.store.session import Session

IDLE = psycopg.pq.TransactionStatus.IDLE


def _rows(db_url: str) -> list[tuple[int]]:
    with connect(db_url) as other:
        return [(int(r[0]),) for r in other.fetchall("select x from probe order by x")]


@pytest.fixture
def table(db_url: str) -> str:
    """The test's own database, with a table `probe (x int)`."""
    with connect(db_url) as s:
        s.execute("create table probe (x int)")
    return db_url


def test_the_commit_goes_in_the_writes_round_trip(table: str, tmp_path: Path) -> None:
    with connect(table) as s:
        before = s.round_trips
        trace = tmp_path / "libpq.trace"
        with trace.open("w") as f:
            s.conn.pgconn.trace(f.fileno())
            with s.transaction(lock_timeout=1, idle_timeout=5), s.pipeline():
                s.execute("insert into probe values (1)")
                s.execute("insert into probe values (2)")
                s.commit_in_pipeline()
            s.conn.pgconn.untrace()
        assert s.round_trips - before == 2  # BEGIN with its timeouts; the writes with the COMMIT
        assert s.conn.info.transaction_status == IDLE
    sent = [line for line in trace.read_text().splitlines() if "\tF\t" in line or " F " in line]
    kinds = [("commit" if "COMMIT" in x else "insert" if "insert" in x else "sync" if "Sync" in x else "")
             for x in sent]  # fmt: skip
    kinds = [k for k in kinds if k]
    # the second pipeline: both inserts, the COMMIT, then one Sync (one wait for the server)
    assert kinds[-4:] == ["insert", "insert", "commit", "sync"]
    assert _rows(table) == [(1,), (2,)]


def test_a_statement_failing_before_the_commit_leaves_nothing(table: str) -> None:
    with connect(table) as s:
        failing = pytest.raises(psycopg.errors.InvalidTextRepresentation)
        with failing, s.transaction(lock_timeout=1), s.pipeline():
            s.execute("insert into probe values (1)")
            s.execute("insert into probe values ('one')")
            s.commit_in_pipeline()
        assert s.conn.info.transaction_status == IDLE
        with s.transaction(lock_timeout=1), s.pipeline():  # the session goes on
            s.execute("insert into probe values (3)")
            s.commit_in_pipeline()
    assert _rows(table) == [(3,)]


def test_a_connection_lost_before_the_writes_is_an_outage_and_writes_nothing(table: str) -> None:
    lost = pytest.raises(DatabaseUnavailable)
    with connect(table) as s, connect(table) as admin, lost, s.transaction(lock_timeout=1):
        s.execute("insert into probe values (1)")
        admin.execute("select pg_terminate_backend(%s)", (s.conn.info.backend_pid,))
        with s.pipeline():
            s.execute("insert into probe values (2)")
            s.commit_in_pipeline()
    assert _rows(table) == []


def test_an_error_after_the_commit_leaves_the_commit_standing(table: str) -> None:
    with connect(table) as s:
        with pytest.raises(ValueError, match="after"), s.transaction(lock_timeout=1):  # noqa: PT012
            with s.pipeline():
                s.execute("insert into probe values (1)")
                s.commit_in_pipeline()
            raise ValueError("after")
        assert s.conn.info.transaction_status == IDLE
    assert _rows(table) == [(1,)]


def _refused(s: Session) -> None:
    with pytest.raises(RuntimeError, match="commit_in_pipeline"):
        s.commit_in_pipeline()


def test_it_is_refused_anywhere_but_a_pipeline_of_a_timed_outermost_transaction(table: str) -> None:
    with connect(table) as s:
        with s.pipeline():
            _refused(s)  # no transaction
        with s.transaction(lock_timeout=1):
            _refused(s)  # not in a pipeline
            s.execute("insert into probe values (1)")
            with s.transaction(), s.pipeline():
                _refused(s)  # a savepoint is open
            with s.transaction(idle_timeout=5), s.pipeline():
                _refused(s)  # a savepoint with timeouts of its own is still a savepoint
            s.execute("insert into probe values (2)")
        with s.transaction(), s.pipeline():
            _refused(s)  # no timeouts: its BEGIN and COMMIT are psycopg's own
            s.execute("insert into probe values (3)")
        assert s.conn.info.transaction_status == IDLE
    assert _rows(table) == [(1,), (2,), (3,)]


def test_an_error_the_block_caught_before_the_commit_rolls_the_transaction_back(table: str) -> None:
    """atkJ: a block that catches its writes' error (the COMMIT queued behind them did not run)
    and ends normally is rolled back, as a COMMIT of a failed transaction would be: the session
    goes on."""
    with connect(table) as s:
        with s.transaction(lock_timeout=1, idle_timeout=5):
            s.execute("insert into probe values (0)")
            with contextlib.suppress(psycopg.errors.InvalidTextRepresentation), s.pipeline():
                s.execute("insert into probe values (1)")
                s.execute("insert into probe values ('one')")
                s.commit_in_pipeline()
        assert s.conn.info.transaction_status == IDLE
        with s.transaction(lock_timeout=1), s.pipeline():
            s.execute("insert into probe values (3)")
            s.commit_in_pipeline()
    assert _rows(table) == [(3,)]


def test_a_transaction_with_timeouts_is_refused_inside_a_pipeline(table: str) -> None:
    """atkJ: its block's errors would surface when the outer pipeline ends, after the transaction
    (and a COMMIT queued in that pipeline would leave the session in a failed transaction)."""
    with connect(table) as s:
        with (
            s.pipeline(),
            pytest.raises(RuntimeError, match="inside a pipeline"),
            s.transaction(lock_timeout=1),
        ):
            pytest.fail("the block must not run")
        assert s.conn.info.transaction_status == IDLE
        with s.pipeline(), s.transaction():  # psycopg's own: it syncs a pipeline of its own
            s.execute("insert into probe values (1)")
    assert _rows(table) == [(1,)]


def test_nothing_may_be_sent_after_the_commit_until_the_block_ends(table: str) -> None:
    """atkJ: a statement after the queued COMMIT would run outside the transaction (in its own,
    after the COMMIT): a statement, a pipeline or a COPY is refused until the block ends."""
    sealed = pytest.raises(RuntimeError, match="COMMIT is queued")
    with connect(table) as s:
        with s.transaction(lock_timeout=1):
            with s.pipeline():
                with s.pipeline():  # nested: the COMMIT runs at this pipeline's Sync
                    s.execute("insert into probe values (1)")
                    s.commit_in_pipeline()
                with sealed:
                    s.execute("insert into probe values (2)")
            with sealed:
                s.execute("select 1")
            with sealed, s.pipeline():
                pytest.fail("refused")
            with sealed:
                s.copy_in("probe", ("x",), [(3,)])
        assert s.fetchall("select x from probe") == [(1,)]  # the block ended: the session goes on
