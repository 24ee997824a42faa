"""The connections store/session.py opens, as the server sees them, and the errors it raises.

Operators tell the engine's connections apart by `application_name` in `pg_stat_activity`
(docs/operations.md, DATABASE_URL); every connection waits at most `connect_timeout` seconds for
an unreachable server; none leaves a prepared statement behind (Supabase's transaction pooler
forbids them) unless it is told the server is reached directly; a sibling connection (the intents', an account's) reaches the same database as
the same role with the same password; a transaction's timeouts are SET LOCAL in milliseconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from strategy_engine.core.errors import Busy, DatabaseUnavailable, InputError
from strategy_engine.store import connect
from strategy_engine.store.driver_errors import INVALID_URL, unavailable
from strategy_engine.store.session import PREPARE_AFTER, Session, sibling, sibling_opener
from strategy_engine.store.values import row_id


def _seen(admin: Session, s: Session) -> tuple[str, str, str]:
    """(application_name, user, database) of `s`'s backend, as another connection sees it."""
    row = admin.fetchone(
        "select application_name, usename::text, datname::text from pg_stat_activity where pid = %s",
        (s.conn.info.backend_pid,),
    )
    assert row is not None
    return (str(row[0]), str(row[1]), str(row[2]))


def test_connections_name_themselves_and_wait_ten_seconds_at_most(db_url: str) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    with connect(db_url) as admin, connect(db_url) as s:
        assert _seen(admin, s) == ("strategy-engine", "postgres", name)
        assert s.conn.info.get_parameters()["connect_timeout"] == "10"
        with sibling(s) as side, sibling_opener(s)() as ahead:
            assert _seen(admin, side) == ("strategy-engine-side", "postgres", name)
            assert _seen(admin, ahead) == ("strategy-engine-side", "postgres", name)
            for c in (side, ahead):
                assert c.conn.info.get_parameters()["connect_timeout"] == "10"
        with sibling(s, application_name="strategy-engine-account") as account:
            assert _seen(admin, account) == ("strategy-engine-account", "postgres", name)
    with (
        connect(db_url, connect_timeout=3, application_name="second-worker") as admin,
        connect(db_url, connect_timeout=4, application_name="lock-waiter") as s,
    ):
        assert _seen(admin, s)[0] == "lock-waiter"
        assert s.conn.info.get_parameters()["connect_timeout"] == "4"
        with sibling(s) as side:  # the sibling's own name and timeout, not its parent's
            assert _seen(admin, side)[0] == "strategy-engine-side"
            assert side.conn.info.get_parameters()["connect_timeout"] == "10"


def test_no_statement_is_ever_prepared(db_url: str) -> None:
    """psycopg prepares a query run 5 times by default; the pooler would refuse it."""
    with connect(db_url) as s, sibling(s) as side:
        for c in (s, side):
            for i in range(8):
                assert c.fetchone("select %s::int + 1", (i,)) == (i + 1,)
            assert c.fetchone("select count(*) from pg_prepared_statements") == (0,)


def test_a_session_told_it_may_prepare_prepares_from_the_fifth_run_and_so_does_its_sibling(
    db_url: str,
) -> None:
    with connect(db_url, prepare=True) as s, sibling(s) as side:
        assert side.prepare
        for c in (s, side):
            for i in range(PREPARE_AFTER):
                assert c.fetchone("select %s::int + 1", (i,)) == (i + 1,)
            assert c.fetchone("select count(*) from pg_prepared_statements") == (0,)
            assert c.fetchone("select %s::int + 1", (9,)) == (10,)  # prepared, then run
            assert c.fetchone("select count(*) from pg_prepared_statements") == (1,)


@pytest.fixture
def password_url(db_url: str) -> Iterator[str]:
    """`db_url` as a role that must give its password (scram), the server's rule for it alone."""
    role, password = f"pw_{uuid.uuid4().hex[:12]}", "Sib1ing-Secret-pw"
    host = parse_qs(urlsplit(db_url).query)["host"][0]
    with connect(db_url) as admin:
        admin.execute(f"create role {role} login password '{password}'")
        hba = Path(str((admin.fetchone("show hba_file") or ("",))[0]))
        before = hba.read_text()
        hba.write_text(f"local all {role} scram-sha-256\n{before}")
        admin.execute("select pg_reload_conf()")
        try:
            yield f"postgresql://{role}:{password}@/{urlsplit(db_url).path.lstrip('/')}?host={host}"
        finally:
            hba.write_text(before)
            admin.execute("select pg_reload_conf()")
            admin.execute(f"drop role {role}")


def test_a_sibling_of_a_password_connection_gives_the_password(password_url: str) -> None:
    role = urlsplit(password_url).username
    with pytest.raises(DatabaseUnavailable) as refused:  # the rule holds: no password, no entry
        connect(password_url.replace(":Sib1ing-Secret-pw@", "@"))
    assert "no password supplied" in (refused.value.detail or "")
    with connect(password_url) as s, sibling(s) as side, sibling_opener(s)() as ahead:
        for c in (side, ahead):
            assert c.fetchone("select current_user, current_database()") == s.fetchone(
                "select current_user, current_database()"
            )
            assert c.fetchone("select current_user") == (role,)


def test_a_sibling_that_cannot_connect_is_an_outage(db_url: str, server_url: str) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    with connect(db_url) as s, connect(server_url) as admin:
        admin.execute(f'alter database "{name}" allow_connections false')
        try:
            with pytest.raises(DatabaseUnavailable) as info:
                sibling(s)
        finally:
            admin.execute(f'alter database "{name}" allow_connections true')
    # a sibling's connection string is no URL: its place is unknown ("?"), not made up
    assert str(info.value) == "database unavailable: ?"
    assert info.value.detail is not None
    assert f'database "{name}" is not currently accepting connections' in info.value.detail


def test_a_lost_connection_is_an_outage_with_the_drivers_words(db_url: str) -> None:
    with connect(db_url) as s, connect(db_url) as admin:
        admin.execute("select pg_terminate_backend(%s)", (s.conn.info.backend_pid,))
        with pytest.raises(DatabaseUnavailable) as info:
            s.execute("select 1")
    assert str(info.value) == "database unavailable"
    assert info.value.detail is not None
    assert "terminating connection due to administrator command" in info.value.detail
    # A driver error without words is named by its class.
    bare = unavailable(psycopg.OperationalError())
    assert (type(bare), str(bare), bare.detail) == (
        DatabaseUnavailable,
        "database unavailable",
        "OperationalError",
    )


def test_a_lock_waited_for_in_vain_is_busy(db_url: str) -> None:
    with connect(db_url) as holder, connect(db_url) as waiter, holder.transaction():
        waiter.execute("set statement_timeout = '20s'")  # a backstop: no lock_timeout would hang here
        holder.execute("select pg_advisory_xact_lock(8123)")
        with pytest.raises(Busy) as info, waiter.transaction(lock_timeout=0.05):
            waiter.execute("select pg_advisory_xact_lock(8123)")
    assert str(info.value) == "busy: another worker holds the lock"


def _timeouts(s: Session) -> tuple[str, str]:
    row = s.fetchone(
        "select current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')"
    )
    assert row is not None
    return (str(row[0]), str(row[1]))


def test_a_transactions_timeouts_are_whole_milliseconds_and_local(db_url: str) -> None:
    with connect(db_url) as s:
        s.execute("set lock_timeout = '7s'")
        s.execute("set idle_in_transaction_session_timeout = '9s'")
        with s.transaction(lock_timeout=2.5, idle_timeout=7.25):
            assert _timeouts(s) == ("2500ms", "7250ms")
        # a positive timeout under a millisecond is one millisecond, never 0 (which means none)
        with s.transaction(lock_timeout=0.0004):
            assert _timeouts(s) == ("1ms", "9s")
        with s.transaction(lock_timeout=0, idle_timeout=3):
            assert _timeouts(s) == ("1ms", "3s")
        with s.transaction(idle_timeout=1.5):  # the other one stays as it was
            assert _timeouts(s) == ("7s", "1500ms")
        with s.transaction():
            assert _timeouts(s) == ("7s", "9s")
        assert _timeouts(s) == ("7s", "9s")  # SET LOCAL: gone with the transaction


def test_the_timeouts_go_with_begin_and_the_first_plain_statement_arms_the_idle_timeout(db_url: str) -> None:
    """BEGIN and the SET LOCAL travel in one pipeline; the block itself runs outside pipeline
    mode (where PostgreSQL would arm no idle timeout), so a worker frozen after its first
    statement is ended by the server."""
    with connect(db_url) as s, pytest.raises(DatabaseUnavailable), s.transaction(idle_timeout=0.2):  # noqa: PT012
        assert s.conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
        assert s.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        s.execute("select 1")
        time.sleep(0.6)
        s.execute("select 1")


def test_a_block_with_timeouts_that_raises_rolls_back_its_writes_alone(db_url: str) -> None:
    with connect(db_url) as s:
        s.execute("create table t (x int)")
        with pytest.raises(ValueError, match="boom"), s.transaction(lock_timeout=1):  # noqa: PT012
            s.execute("insert into t values (1)")
            raise ValueError("boom")
        assert s.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with s.transaction(lock_timeout=1):
            s.execute("insert into t values (2)")
            with pytest.raises(ValueError, match="inner"), s.transaction(idle_timeout=5):  # noqa: PT012
                s.execute("insert into t values (3)")
                assert _timeouts(s)[1] == "5s"
                raise ValueError("inner")  # the savepoint rolls back; the outer block goes on
            s.execute("insert into t values (4)")
        assert s.fetchall("select x from t order by x") == [(2,), (4,)]


def test_a_connection_lost_before_begin_is_an_outage_and_leaves_no_transaction_open(db_url: str) -> None:
    with connect(db_url) as s, connect(db_url) as admin:
        admin.execute("select pg_terminate_backend(%s)", (s.conn.info.backend_pid,))
        with pytest.raises(DatabaseUnavailable), s.transaction(lock_timeout=1, idle_timeout=1):
            pytest.fail("the block must not run")


def test_a_url_that_is_no_postgresql_url_is_refused_by_name() -> None:
    for url in ("mysql://u:pw@127.0.0.1:1/db", "127.0.0.1:5432", ""):
        with pytest.raises(InputError) as info:
            connect(url)
        assert str(info.value) == INVALID_URL == "the database URL is not a valid postgresql:// URL"


def test_row_ids_are_uuids_or_integers_only() -> None:
    key = uuid.UUID("6f1c1f4e-8f2b-4c55-9a51-6a3f0d6b8e21")
    assert row_id(key) is key
    assert row_id(7) == 7
    for value, name in ((True, "bool"), ("7", "str"), (7.0, "float"), (None, "NoneType")):
        with pytest.raises(TypeError) as info:
            row_id(value)
        assert str(info.value) == f"unsupported key type {name}"


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("sslmode=bogus", "sslmode has an invalid value"),
        ("target_session_attrs=nope", "target_session_attrs has an invalid value"),
        ("gssencmode=zz", "gssencmode has an invalid value"),
        ("service=nosuch-service", "service is not defined"),
        # libpq's other spellings of an option it refuses before any network I/O (were exit 3)
        ("service=x%22y", "service is not defined"),
        ("ssl_min_protocol_version=zz", "ssl_min_protocol_version has an invalid value"),
        ("port=abc", "port has an invalid value"),  # was named "integer"
        ("port=99999", "port has an invalid value"),
        ("sslrootcert=system&sslmode=require", "sslmode has an invalid value"),
        (
            "ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2",
            "ssl_min_protocol_version has an invalid value",
        ),
        ("require_auth=password,!md5", "require_auth has an invalid value"),
    ],
)
def test_an_option_libpq_refuses_is_bad_input_not_an_outage(db_url: str, option: str, says: str) -> None:
    """libpq refuses these before any network I/O: retrying cannot help, so they are the user's
    input (exit 2), named by option; the value and the password stay out of the message."""
    url = db_url.replace("postgresql://", "postgresql://postgres:Pw-Secret-123@", 1)
    url += ("&" if "?" in url else "?") + option
    with pytest.raises(InputError) as info:
        connect(url)
    assert str(info.value) == f"{INVALID_URL}: {says}"
    assert "Pw-Secret-123" not in str(info.value) + str(getattr(info.value, "detail", ""))
    for value in (kv.split("=")[1] for kv in option.split("&")):
        assert value not in str(info.value).split(": ", 1)[1].replace(f"{value} has", "")
