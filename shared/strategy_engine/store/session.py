"""One database session: a psycopg connection, explicit transactions, a statement counter.

The connection works through Supabase's transaction pooler as well as directly: no session
state (no SET, LISTEN or session advisory locks) outlives a transaction, and no statement is
prepared unless the caller says the server is reached directly (`prepare=True`: the embedded
server, or `DB_PREPARED_STATEMENTS`), as a transaction pooler cannot hold prepared statements.
Every statement goes through `execute`/`copy`, which count them (the tick's statement count
must not grow with the number of symbols) and translate driver errors into ours once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.numeric import FloatLoader

from strategy_engine.core.errors import Busy, DatabaseUnavailable, InputError
from strategy_engine.store.driver_errors import (
    INVALID_URL,
    OUTAGES,
    PREPARED_LOST,
    connect_error,
    unavailable,
)

Params = Sequence[Any] | dict[str, Any] | None
PREPARE_AFTER = 5  # psycopg's default threshold: a statement run this often is prepared
T = TypeVar("T")
# A statement already sent (possibly queued in a pipeline) and how to read its answer: called
# after the pipeline block, it parses the rows. `store` functions named `..._later` return one.
Later = Callable[[], T]


def connect(
    url: str, *, prepare: bool = False, connect_timeout: int = 10, application_name: str = "strategy-engine"
) -> Session:
    """A session on `url`. Raises InputError (not a postgresql:// URL, or one libpq cannot parse)
    or DatabaseUnavailable; neither message quotes the driver, whose text may carry the password.

    `prepare`: a statement run PREPARE_AFTER times on this connection is prepared (parsed once,
    its plan cached by the server: a warm tick at 3 symbols spent 1.9 of its 3.1 server ms in
    parse and plan). Only for a server reached directly: a transaction pooler (Supabase :6543)
    hands each transaction to any server connection, where the statement does not exist."""
    if not url.startswith(("postgres://", "postgresql://")):
        raise InputError(INVALID_URL)
    return _open(url, url, connect_timeout, application_name, prepare)


def sibling(s: Session, *, application_name: str = "strategy-engine-side") -> Session:
    """A second connection to the database `s` is connected to, for writes that must commit
    while `s` is inside a transaction (the write-ahead order intents). Raises DatabaseUnavailable."""
    return sibling_opener(s, application_name=application_name)()


def sibling_opener(s: Session, *, application_name: str = "strategy-engine-side") -> Callable[[], Session]:
    """`sibling`, split: where to connect is read now (on the thread that owns `s`), the
    connection is opened when the answer is called (on any thread)."""
    info = s.conn.info
    params = {k: v for k, v in info.get_parameters().items() if k != "application_name"}
    if info.password:
        params["password"] = info.password
    conninfo = make_conninfo("", **params)
    return lambda: _open(conninfo, "", 10, application_name, s.prepare)


def _open(conninfo: str, url: str, connect_timeout: int, application_name: str, prepare: bool) -> Session:
    """`url`: what errors may name (its location) and must scrub (its password)."""
    try:
        conn = psycopg.connect(
            conninfo,
            autocommit=True,
            prepare_threshold=PREPARE_AFTER if prepare else None,
            connect_timeout=connect_timeout,
            application_name=application_name,
        )
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise connect_error(exc, url) from None
    conn.adapters.register_loader("numeric", FloatLoader)
    return Session(conn, prepare=prepare)


# This transaction's COMMIT waits for its WAL to reach the disk even where a database or role
# sets synchronous_commit off (a stronger setting, such as remote_apply, is kept): every timed
# transaction (strategy-minutes), the intents' and the operator's writes (`Session.durable`).
DURABLE = """set_config('synchronous_commit', case current_setting('synchronous_commit')
  when 'off' then 'on' else current_setting('synchronous_commit') end, true)"""
_SET_TIMEOUTS = f"""
select set_config('lock_timeout', coalesce(%s, current_setting('lock_timeout')), true),
  set_config('idle_in_transaction_session_timeout',
             coalesce(%s, current_setting('idle_in_transaction_session_timeout')), true),
  {DURABLE}
"""


def copy_from_stdin(table: str, columns: Sequence[str], schema: str = "public") -> sql.Composed:
    """`copy <schema>.<table> (<columns>) from stdin`, every name quoted as an identifier."""
    return sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{max(1, round(seconds * 1000))}ms"


class Session:
    """`statements` counts statements sent; `round_trips` counts waits for the server (a statement
    outside a pipeline, a pipeline block, a COPY, BEGIN and COMMIT): both for the benchmarks."""

    def __init__(self, conn: psycopg.Connection[Any], *, prepare: bool = False) -> None:
        self.conn = conn
        self.prepare = prepare  # statements run often are prepared (`connect`)
        self.statements = 0
        self.round_trips = 0
        self.transactions = 0  # outermost transactions begun: which one a caller is in
        self._piped = 0
        self._ends: ExitStack | None = None  # the timed outermost transaction's COMMIT, until sent
        self._sealed = False  # its COMMIT is queued: nothing more may be sent until its block ends

    def close(self) -> None:
        self.conn.close()

    @property
    def idle(self) -> bool:
        """No transaction is open, and the next statement commits on its own (autocommit)."""
        return self.conn.autocommit and self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    def check_outside_transactions(self, what: str) -> None:
        """DatabaseUnavailable if the connection is lost; RuntimeError naming `what` if a transaction
        or pipeline is open, or no autocommit (its first statement would open one)."""
        if self.conn.closed or self.conn.info.transaction_status == psycopg.pq.TransactionStatus.UNKNOWN:
            raise DatabaseUnavailable("database unavailable")
        if not self.idle or self._piped:
            raise RuntimeError(f"{what}: call it outside any transaction, on an autocommit connection")

    def durable(self) -> None:
        """The transaction under way (or the implicit one this statement begins) commits to disk
        whatever the server's default (`DURABLE`): for writes an operator relies on."""
        self.execute(f"select {DURABLE}")

    def _outage(self, exc: Exception) -> DatabaseUnavailable | Busy:
        """`unavailable(exc)`; a prepared statement lost also stops preparing on this connection,
        whose names mean nothing on the server connection it now reaches: the next statement runs."""
        if isinstance(exc, PREPARED_LOST):
            self.conn.prepare_threshold = None
            self.prepare = False
        return unavailable(exc)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(
        self, *, lock_timeout: float | None = None, idle_timeout: float | None = None
    ) -> Iterator[Session]:
        """BEGIN ... COMMIT; any exception rolls the whole block back.

        `lock_timeout` (seconds): a statement waiting longer for a lock raises `Busy`.
        `idle_timeout` (seconds): the server ends this transaction if it sits idle longer (a
        frozen worker), releasing its locks. Both are `SET LOCAL` (set_config(..., true)): they end
        with the transaction, so they are safe through Supabase's transaction pooler. They go
        with the BEGIN, in one round trip; PostgreSQL arms the idle timeout at the block's first
        plain statement (a pipeline does not arm it: `pipeline`), before which no lock is held.
        A transaction with timeouts may not begin inside a pipeline (RuntimeError): its block's
        errors would surface only when that pipeline ends, after the transaction.
        """
        if self._piped and (lock_timeout is not None or idle_timeout is not None):
            raise RuntimeError("a transaction with timeouts cannot begin inside a pipeline")
        try:
            self.round_trips += 2  # BEGIN, COMMIT (or ROLLBACK); SAVEPOINT, RELEASE when nested
            outermost = self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            self.transactions += outermost
            if lock_timeout is None and idle_timeout is None:
                outer, self._ends = self._ends, None  # a savepoint open: no COMMIT may be queued
                try:
                    with self.conn.transaction():
                        yield self
                finally:
                    self._ends = outer
                return
            # The Transaction itself: `Connection.transaction()` inside a pipeline would keep the
            # connection in pipeline mode for the whole block, and no idle timeout is armed there.
            # It begins inside the BEGIN's pipeline and ends, as `with tx:` would, after the block.
            with ExitStack() as ends:
                with self.conn.pipeline():
                    ends.enter_context(psycopg.Transaction(self.conn))  # BEGIN, queued ahead of the SET
                    self.statements += 1
                    self.conn.execute(_SET_TIMEOUTS, (_ms(lock_timeout), _ms(idle_timeout)))
                outer, self._ends = self._ends, ends if outermost else None
                try:
                    yield self
                    queued = outermost and self._ends is None  # its COMMIT went with a pipeline
                except BaseException:
                    if outermost and self._ends is None:
                        with suppress(Exception):  # no-op when that COMMIT ran; the block's error wins
                            self.conn.rollback()
                    raise
                finally:
                    self._ends = outer
                    self._sealed = self._sealed and not outermost
                if queued:  # no-op when the COMMIT ran; if the block caught the error of a statement
                    self.conn.rollback()  # before it, what a COMMIT then does: roll back
        except (psycopg.InternalError, *OUTAGES) as exc:
            raise self._outage(exc) from None

    def commit_in_pipeline(self) -> None:
        """Queue the COMMIT of the transaction under way in the pipeline under way: it goes with
        the block's last statements, in their round trip, instead of one of its own.

        Only inside `pipeline`, at the outermost level of a `transaction` given a timeout (whose
        BEGIN went by pipeline too). If a statement queued before it fails, the COMMIT does not
        run: the error is raised when the pipeline ends and the transaction is rolled back when
        its block ends. Nothing may be sent in the transaction after it: a statement, pipeline or
        COPY raises RuntimeError until the block ends. Raises RuntimeError when called elsewhere
        (a savepoint open, or no such transaction).
        """
        if self._ends is None or not self._piped:
            raise RuntimeError("commit_in_pipeline: not in a pipeline of a timed outermost transaction")
        ends, self._ends = self._ends, None
        self._sealed = True
        ends.close()  # the Transaction's exit queues COMMIT in the pipeline (psycopg _exec_command)
        self.round_trips -= 1  # counted with the BEGIN; it rides with the pipeline

    def _check_open(self) -> None:
        if self._sealed:  # it would run after the COMMIT, outside the transaction
            raise RuntimeError("the transaction's COMMIT is queued: nothing more may be sent in it")

    @contextmanager
    def pipeline(self) -> Iterator[Session]:
        """Send the block's statements together and wait for the server once (psycopg pipeline mode).

        Read results only after the block (the `Later` functions the store returns): a fetch
        inside it would wait for the server there. An error of any statement is raised when the
        block ends (translated like `execute`'s), and the statements after it are not run.

        Inside a transaction, follow the block with a plain statement before anything slow:
        psycopg ends a pipeline with a Flush after its Sync, and PostgreSQL arms
        `idle_in_transaction_session_timeout` only at a ReadyForQuery that no message follows, so
        until the next plain statement a frozen worker would hold its locks with no idle timeout
        (measured on PostgreSQL 16 with psycopg 3.3).
        """
        self._check_open()
        self._piped += 1
        try:
            with self.conn.pipeline():
                yield self
        except OUTAGES as exc:
            raise self._outage(exc) from None
        finally:
            self._piped -= 1
            if not self._piped:
                self.round_trips += 1

    def execute(
        self, query: str | sql.Composed, params: Params = None, *, binary: bool = False
    ) -> psycopg.Cursor[Any]:
        """Run one statement; `binary` asks for binary results (no text parsing of many rows)."""
        self._check_open()
        self.statements += 1
        self.round_trips += 0 if self._piped else 1
        try:
            return self.conn.cursor(binary=binary).execute(query, params)
        except OUTAGES as exc:
            raise self._outage(exc) from None

    def fetchall(
        self, query: str | sql.Composed, params: Params = None, *, binary: bool = False
    ) -> list[tuple[Any, ...]]:
        return self.execute(query, params, binary=binary).fetchall()

    def fetchone(self, query: str | sql.Composed, params: Params = None) -> tuple[Any, ...] | None:
        return self.execute(query, params).fetchone()

    def copy_in(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, schema: str = "public"
    ) -> int:
        """COPY rows into `<schema>.<table>` in one statement (the schema named, as in every
        statement of the store: a search_path never redirects it; `pg_temp` for a temporary
        table): the bulk path of the journal and backfill.
        Not inside a pipeline (psycopg refuses COPY there)."""
        self._check_open()
        self.statements += 1
        self.round_trips += 1
        stmt = copy_from_stdin(table, columns, schema)
        try:
            with self.conn.cursor() as cur, cur.copy(stmt) as cp:
                for row in rows:
                    cp.write_row(row)
        except OUTAGES as exc:
            raise self._outage(exc) from None
        return len(rows)
