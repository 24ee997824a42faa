"""Attacks on the order path of issue 17 (reads sent ahead, one transaction per Alpaca account),
kept as regression tests. Each of the first four broke the first version:

1. the reads sent ahead were used after another worker's order landed and its minute rolled
   back (its mirror write, the stamp, rolled back with it): now an account with intents is read
   again under the lock;
2. a live endpoint with several strategies on one account raised KeyError, not the refusal;
3. the clock asked ahead with the first account's credentials failed every Alpaca account: a
   failed answer is now asked again by the next account;
4. a strategy claimed by a second worker while the batch held the account was run by nobody,
   both invocations `ok`: a lock waited for in vain now makes the minute retryable (HTTP 503).

And attacks that held: kill -9 at points inside the batch, then the minute re-run; a failed
COMMIT of the batch.

Real Postgres, the real alpaca-py client and the loopback Alpaca (`tests/fake_alpaca`).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from strategy_engine import engine, fanout
from strategy_engine.brokers.base import Broker
from strategy_engine.core.errors import BrokerUnavailable, DatabaseUnavailable, LiveTradingRefused
from strategy_engine.core.models import BrokerAccount, Limits, Order, OrderIntent, StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_alpaca_accounts import at, fakes, outcomes, two_strategies
from tests.test_alpaca_engine import ACCOUNT, REPLAY, deps
from tests.test_exactly_once import T, entry_setup

__all__ = ["fakes"]  # a fixture, imported
READS = ("account", "positions", "open_orders", "recent_orders")


class Hooked:
    """The real Alpaca broker with hooks: `after_read(name)` once a read answered, `on_submit(intent,
    inner)` instead of the POST (call `inner.submit(intent)` to send it)."""

    def __init__(
        self,
        inner: Broker,
        after_read: Callable[[str], None] | None = None,
        on_submit: Callable[[OrderIntent, Broker], Order] | None = None,
    ) -> None:
        self._inner, self._after_read, self._on_submit = inner, after_read, on_submit

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in READS and self._after_read is not None:
            hook = self._after_read

            def read(*args: Any) -> Any:
                out = attr(*args)
                hook(name)
                return out

            return read
        return attr

    def submit(self, intent: OrderIntent) -> Order:
        if self._on_submit is not None:
            return self._on_submit(intent, self._inner)
        return self._inner.submit(intent)


def hooked(
    base: engine.Deps,
    after_read: Callable[[str], None] | None = None,
    on_submit: Callable[[OrderIntent, Broker], Order] | None = None,
) -> engine.Deps:
    def make(account: BrokerAccount) -> Broker:
        return Hooked(base.alpaca_broker(account), after_read, on_submit)

    return replace(base, alpaca_broker=make)


class ReadsDone:
    """Counts the broker reads answered; `wait()` until the four reads sent ahead have answered."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.all = threading.Event()

    def __call__(self, name: str) -> None:
        self.done.add(name)
        if self.done >= set(READS):
            self.all.set()

    def wait(self) -> None:
        assert self.all.wait(10), f"the reads sent ahead never all answered: {self.done}"


def once_the_run_started(db_url: str, action: Callable[[], None]) -> Callable[[], datetime]:
    """A clock that runs `action` the first time it is asked once the invocation's engine_runs
    row exists: after the accounts' reads were sent ahead (their stamps read), before any
    strategy takes the account's lock."""
    done = False

    def clock() -> datetime:
        nonlocal done
        if not done:
            with connect(db_url) as other:
                row = other.fetchone("select count(*) from engine_runs where status = 'running'")
            if row is not None and row[0]:
                done = True
                action()
        return datetime.now(T.tzinfo)

    return clock


def backends(db_url: str) -> set[int]:
    """The server processes connected to the database (the one asking left out)."""
    with connect(db_url) as other:
        rows = other.fetchall(
            "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        )
    return {int(r[0]) for r in rows}


def gone(db_url: str, pids: set[int]) -> None:
    """Wait (at most 10 s) until none of `pids` is connected any more. A killed process's socket
    closes at once, but its backend ends, and releases its row locks, only when the server
    notices: until then the next worker finds the strategies it held `busy`."""
    for _ in range(200):
        if not pids & backends(db_url):
            return
        time.sleep(0.05)
    raise AssertionError(f"the killed worker's backends {pids & backends(db_url)} still run after 10 s")


def _position(fake: FakeAlpaca, symbol: str) -> Decimal:
    return fake.positions.get(symbol, (Decimal(0), Decimal(0)))[0]


# ---------------------------------------------------------------------------------------------
# 1. The reads sent ahead are used although another worker placed an order on the account
#    between the reads and the lock: its transaction rolled back (an outage on another of its
#    orders, or its answer lost), so the balance row's stamp never moved.
# ---------------------------------------------------------------------------------------------


KILLED_AFTER_IWM = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime
    from pydantic import SecretStr
    from strategy_engine import engine
    from strategy_engine.brokers.alpaca import AlpacaPaperBroker
    from strategy_engine.invocation import TickPolicy
    from strategy_engine.store import connect

    class DiesAfterIwm(AlpacaPaperBroker):
        def submit(self, intent):
            if intent.symbol != "IWM":
                raise ConnectionError("never sent")
            super().submit(intent)
            os._exit(137)  # killed once Alpaca accepted IWM, before the minute commits

    db, minute, url, key, secret = sys.argv[1:]
    broker = lambda _account: DiesAfterIwm(SecretStr(key), SecretStr(secret), url, timeout_seconds=5, retry_budget_seconds=20)
    with connect(db) as s:
        d = engine.Deps(alpaca_broker=broker, policy=TickPolicy(max_lag_seconds=0))
        engine.tick(s, datetime.fromisoformat(minute), only="a", deps=d)
    """
)


@pytest.mark.parametrize("how", ["filled-then-outage", "answer-lost", "killed"])
def test_a_worker_rolled_back_after_its_order_landed_leaves_the_stamp_and_the_stale_reads_are_used(
    session: Session, fake: FakeAlpaca, db_url: str, how: str
) -> None:
    """Worker 1 runs strategy a (IWM, QQQ) alone; its IWM order lands at Alpaca, then its minute
    fails and rolls back (so its mirror write, the stamp, rolls back too). Worker 2 had sent its
    reads ahead before IWM landed; under the lock it finds the stamp unchanged and uses them.
    Strategy b (IWM, max_position_size 1) then sees no IWM position and no working IWM order,
    and buys a second IWM: two shares on an account whose only IWM strategy allows one.
    Read under the lock (as before issue 17) the account holds IWM and b holds."""
    seed(session, name="a", account=ACCOUNT, broker="alpaca", config={"symbols": ["IWM", "QQQ"]})
    seed(
        session, name="b", account=ACCOUNT, broker="alpaca", config={"symbols": ["IWM"]},
        limits=Limits(max_position_size=1),
    )  # fmt: skip
    entry_setup(session, ("IWM", "QQQ"), T)
    if how in ("filled-then-outage", "killed"):
        fake.set_policy("instant")  # IWM fills inside its POST
    else:
        fake.set_policy("manual")  # IWM stays working at Alpaca

    def worker1_submit(intent: OrderIntent, inner: Broker) -> Order:
        if how == "filled-then-outage":
            if intent.symbol == "QQQ":
                raise BrokerUnavailable("Alpaca POST /v2/orders still failing: connection reset")
            return inner.submit(intent)
        placed = inner.submit(intent)  # Alpaca accepts it; the answer never comes back
        if intent.symbol == "IWM":
            raise BrokerUnavailable("Alpaca POST /v2/orders: read timed out")
        return placed

    w1 = hooked(deps(fake), on_submit=worker1_submit)
    reads = ReadsDone()
    outcome1: list[Any] = []

    def worker1() -> None:
        try:
            run_worker1()
        except BaseException as exc:  # raised inside worker 2's clock: the engine would take it
            outcome1.append(exc)

    def run_worker1() -> None:
        reads.wait()  # worker 2's reads have all answered: IWM is not in them
        if how == "killed":
            before = backends(db_url)
            killed = subprocess.run(
                [sys.executable, "-c", KILLED_AFTER_IWM, db_url, T.isoformat(), fake.url, KEY, SECRET],
                capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
            )  # fmt: skip
            assert killed.returncode == 137, killed.stderr
            gone(db_url, backends(db_url) - before)  # as by the next invocation, seconds later
            outcome1.append(None)
            return
        with connect(db_url) as other:
            outcome1.append(engine.tick(other, T, only="a", deps=w1))

    w2 = hooked(deps(fake), after_read=reads)
    w2.clock = once_the_run_started(db_url, worker1)
    result = engine.tick(session, T, deps=w2)

    (run1,) = outcome1
    if isinstance(run1, BaseException):
        raise run1
    if run1 is not None:
        assert run1.strategies[0].outcome is StrategyOutcome.FAILED  # worker 1 rolled back
    iwm = [o for o in fake.orders.values() if o["symbol"] == "IWM"]
    outcomes = {r.strategy: r.outcome for r in result.strategies}
    assert outcomes == {"a": StrategyOutcome.PROCESSED, "b": StrategyOutcome.PROCESSED}
    # b's IWM decision: the account already holds (or is buying) IWM -> no second order
    logged = session.fetchall(
        "select l.outcome from strategy_logs l join strategy_definitions d on d.id = l.strategy_id"
        " where d.name = 'b' and l.symbol = 'IWM'"
    )
    assert [r[0] for r in logged] == ["held"], f"b bought IWM again: {len(iwm)} IWM orders at Alpaca"
    assert len(iwm) == 1
    if how != "answer-lost":
        assert _position(fake, "IWM") == 1


def test_control_the_same_worker_1_before_worker_2_starts_and_b_holds(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    """The control of the attack above: worker 1's same failed minute, but over before worker 2
    reads the account. Worker 2 then sees IWM held and b holds: the expectation above is the
    engine's own behaviour whenever its reads are not older than the other worker's order."""
    seed(session, name="a", account=ACCOUNT, broker="alpaca", config={"symbols": ["IWM", "QQQ"]})
    seed(
        session, name="b", account=ACCOUNT, broker="alpaca", config={"symbols": ["IWM"]},
        limits=Limits(max_position_size=1),
    )  # fmt: skip
    entry_setup(session, ("IWM", "QQQ"), T)
    fake.set_policy("instant")

    def worker1_submit(intent: OrderIntent, inner: Broker) -> Order:
        if intent.symbol == "QQQ":
            raise BrokerUnavailable("Alpaca POST /v2/orders still failing: connection reset")
        return inner.submit(intent)

    with connect(db_url) as other:
        run1 = engine.tick(other, T, only="a", deps=hooked(deps(fake), on_submit=worker1_submit))
    assert run1.strategies[0].outcome is StrategyOutcome.FAILED
    engine.tick(session, T, deps=deps(fake))
    logged = session.fetchall(
        "select l.outcome from strategy_logs l join strategy_definitions d on d.id = l.strategy_id"
        " where d.name = 'b' and l.symbol = 'IWM'"
    )
    assert [r[0] for r in logged] == ["held"]
    assert _position(fake, "IWM") == 1


# ---------------------------------------------------------------------------------------------
# 2. A live endpoint in the settings, with two strategies on the account: the batch path turns
#    the tick's refusal into a KeyError.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def live_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://API.alpaca.markets:443/")
    monkeypatch.setenv("ALPACA_API_KEY", KEY)
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("live_settings")
def test_settings_pointing_at_the_live_host_with_two_strategies_on_the_account_refuse_the_tick(
    session: Session,
) -> None:
    """One strategy on the account: LiveTradingRefused (tests/test_alpaca_engine.py). Two: the
    batch's `except Exception` swallows the refusal, then `runs[k]` of the strategy that raised
    is missing: the tick raises KeyError (an internal error, exit 3 / 500, retried), not the
    one-line refusal (exit 2 / 403)."""
    for name, symbols in (("a", ["IWM"]), ("b", ["SPY"])):
        seed(session, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": symbols})
    entry_setup(session, ("IWM", "SPY"), T)
    with pytest.raises(LiveTradingRefused):
        engine.tick(session, T, deps=engine.Deps(policy=REPLAY))
    assert session.fetchone("select count(*) from strategy_logs") == (0,)


# ---------------------------------------------------------------------------------------------
# 3. kill -9 of the tick at points of one account's batch (three strategies, one transaction),
#    then the minute run again: every order at Alpaca known to the journal, one per client id.
# ---------------------------------------------------------------------------------------------

# kill -9 points (`tests/kill_points.py`): one of a's orders accepted (b and c mid-staging or not
# yet); a's orders sent, b's intents committed, b's orders not sent; every answer recorded, the
# batch's COMMIT not sent.
KILL_AT = {
    "after-first-post": ("after-post", "*"),
    "b-intents-committed": ("after-intents", "SPY"),
    "before-commit": ("before-commit", "c"),
}
BOOKS = {"a": ("IWM",), "b": ("SPY",), "c": ("QQQ",)}


@pytest.mark.parametrize("where", ["after-first-post", "b-intents-committed", "before-commit"])
@pytest.mark.parametrize("fill", ["instant", "manual"])
def test_kill_in_the_batch_then_the_retry_leaves_every_order_known_and_one_per_client_id(
    db_url: str, fake: FakeAlpaca, where: str, fill: str
) -> None:
    with connect(db_url) as s:
        for name, symbols in BOOKS.items():
            seed(s, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
        entry_setup(s, ("IWM", "SPY", "QQQ"), T)
    fake.set_policy(fill)
    killed = subprocess.run(
        [sys.executable, "-m", "tests.kill_points", db_url, T.isoformat(), *KILL_AT[where], fake.url, KEY, SECRET],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert killed.returncode == 137, killed.stderr
    with connect(db_url) as s:
        assert s.fetchone("select count(*) from strategy_logs") == (0,)  # nothing of the batch stood
        engine.tick(s, T, deps=deps(fake))
        engine.tick(s, T, deps=deps(fake))
        rows = s.fetchall(
            "select d.name, t.symbol, t.client_order_id, t.broker_order_id, t.status"
            " from paper_trades t join strategy_definitions d on d.id = t.strategy_id order by 1"
        )
        cids = [r[2] for r in rows]
        assert len(cids) == len(set(cids)) == 3
        at_broker = {o["client_order_id"]: o for o in fake.orders.values()}
        assert len(at_broker) == len(fake.orders)  # one order per client id at Alpaca
        for _name, _sym, cid, broker_id, status in rows:  # every order Alpaca holds is known
            if cid in at_broker:
                assert (broker_id, status) == (at_broker[cid]["id"], at_broker[cid]["status"])
            else:
                assert status in ("intent", "void")
        assert set(at_broker) <= set(cids)
        assert s.fetchall(
            "select d.name, st.last_run_minute from strategy_state st"
            " join strategy_definitions d on d.id = st.strategy_id order by 1"
        ) == [(name, T) for name in BOOKS]


def test_a_failed_commit_of_the_batch_fails_every_strategy_and_the_retry_records_each_order_once(
    session: Session, fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    """Held: a deferred constraint that fails at COMMIT (the batch's one COMMIT) fails a, b and c;
    their orders are at Alpaca; the retry reconciles them, sends nothing again."""
    for name, symbols in BOOKS.items():
        seed(session, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(session, ("IWM", "SPY", "QQQ"), T)
    session.execute(
        """
        create function attack_fail_at_commit() returns trigger language plpgsql as $$
        begin
          if new.last_run_minute is not null and exists (select 1 from attack_armed) then
            raise exception 'attack: commit refused';
          end if;
          return new;
        end $$;
        create table attack_armed (x int);
        insert into attack_armed values (1);
        create constraint trigger attack_at_commit after update on strategy_state
          deferrable initially deferred for each row execute function attack_fail_at_commit();
        """
    )
    result = engine.tick(session, T, deps=deps(fake))
    assert [(r.strategy, r.outcome) for r in result.strategies] == [
        (name, StrategyOutcome.FAILED) for name in BOOKS
    ]
    assert all("commit refused" in (r.error or "") for r in result.strategies)
    said = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "strategy failed"]
    assert [(f["strategy"], f["run_id"], f["minute"]) for f in said] == [
        (name, str(result.run_id), T.isoformat()) for name in BOOKS
    ]
    assert fake.orders_accepted == 3
    assert session.fetchone("select count(*) from strategy_logs") == (0,)
    session.execute("delete from attack_armed")
    again = engine.tick(session, T, deps=deps(fake))
    assert [(r.outcome, r.orders, r.reconciled) for r in again.strategies] == [
        (StrategyOutcome.PROCESSED, 0, 1)
    ] * 3
    assert fake.requests["POST /v2/orders"] == 3
    rows = session.fetchall("select client_order_id, broker_order_id, status from paper_trades")
    assert sorted((r[0], r[1]) for r in rows) == sorted(
        (o["client_order_id"], o["id"]) for o in fake.orders.values()
    )


def test_a_failed_begin_of_the_batch_fails_every_strategy_and_sends_nothing(
    session: Session, fake: FakeAlpaca, db_url: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The caller's connection is ended once the run's start and the day rows are committed,
    as the accounts begin, so the batch's BEGIN fails: each of a, b and c is logged failed (an
    outage), nothing is sent, and the tick raises the outage (its run row cannot be closed on
    that connection)."""
    for name, symbols in BOOKS.items():
        seed(session, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(session, ("IWM", "SPY", "QQQ"), T)
    run_all = fanout.run_all

    def cut_then_run(s: Session, *args: Any) -> Any:
        with connect(db_url) as other:
            other.execute("select pg_terminate_backend(%s)", (s.conn.info.backend_pid,))
        return run_all(s, *args)

    monkeypatch.setattr(fanout, "run_all", cut_then_run)
    with pytest.raises(DatabaseUnavailable):
        engine.tick(session, T, deps=deps(fake))
    said = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "strategy failed"]
    assert [(f["strategy"], f["error_class"]) for f in said] == [
        (name, "DatabaseUnavailable") for name in BOOKS
    ]
    assert fake.requests["POST /v2/orders"] == 0


# ---------------------------------------------------------------------------------------------
# 4. The broker clock is asked once, ahead, with the FIRST Alpaca account's credentials. Its
#    failure was kept for the whole invocation: one account with bad credentials failed every
#    Alpaca account's strategies. Now each strategy asks again with its own account.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["unset", "refused-by-alpaca", "clock-outage"])
def test_an_account_with_bad_credentials_listed_first_fails_only_its_own_strategies(
    session: Session,
    fakes: tuple[FakeAlpaca, FakeAlpaca],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bad: str,
) -> None:
    first, second = fakes
    two_strategies(session, ("THIRD", "SECOND"))  # a on alpaca-a (bad keys), b on alpaca-b (good)
    monkeypatch.chdir(tmp_path)  # no .env file here to fall back on
    if bad == "clock-outage":  # a's keys are good, but its account's clock requests fail (503)
        monkeypatch.setenv("ALPACA_THIRD_API_KEY", KEY)
        monkeypatch.setenv("ALPACA_THIRD_SECRET_KEY", SECRET)
        monkeypatch.setenv("ALPACA_RETRY_BUDGET_SECONDS", "1")
        get_settings.cache_clear()
        first.fail("GET /v2/clock", 503, times=10_000)
    if bad == "refused-by-alpaca":  # set, but keys Alpaca does not know: 401 on every request
        monkeypatch.setenv("ALPACA_THIRD_API_KEY", "PKWRONGKEY0003")
        monkeypatch.setenv("ALPACA_THIRD_SECRET_KEY", "wrong-secret")
        get_settings.cache_clear()
    result = engine.tick(session, T, deps=at(T))
    got = outcomes(result)
    assert got["b"] == (StrategyOutcome.PROCESSED, None), got["b"]
    assert [o["symbol"] for o in second.orders.values()] == ["SPY"]
    if bad == "clock-outage":
        # The clock is the market's, one per broker: once b's account has read it (open), a may
        # go on with it (its own reads work); if a asked first, it fails on its own outage.
        assert got["a"][0] in (StrategyOutcome.PROCESSED, StrategyOutcome.FAILED), got["a"]
        assert [o["symbol"] for o in first.orders.values()] == (
            ["IWM"] if got["a"][0] is StrategyOutcome.PROCESSED else []
        )
    else:  # a's own reads are refused: a fails, and nothing is sent for it
        assert got["a"][0] is StrategyOutcome.FAILED
        assert first.orders == {}


# ---------------------------------------------------------------------------------------------
# 5. Two workers on one minute: the batch holds the account's lock until every strategy's
#    answers are in, so a second worker that claimed b waits for all of them (not for a's
#    minute alone, as on main) and gives up; the batch skipped b as busy: b is run by nobody,
#    and both invocations report `ok` (not retried).
# ---------------------------------------------------------------------------------------------


@dataclass
class _HookedDeps(engine.Deps):
    on_first_open: Callable[[], None] | None = None

    def open_account(self, *args: Any, **kwargs: Any) -> Any:
        view = super().open_account(*args, **kwargs)
        hook, self.on_first_open = self.on_first_open, None
        if hook is not None:
            hook()
        return view


def _wait_for_a_lock_wait(db_url: str) -> None:
    with connect(db_url) as probe:
        for _ in range(500):
            row = probe.fetchone("select count(*) from pg_stat_activity where wait_event_type = 'Lock'")
            if row is not None and row[0]:
                return
            threading.Event().wait(0.02)
    raise AssertionError("the second worker never waited on the account's lock")


def test_a_strategy_claimed_by_a_second_worker_while_the_batch_runs_is_run_by_someone_or_retried(
    session: Session, fake: FakeAlpaca, db_url: str
) -> None:
    for name, symbols in BOOKS.items():
        seed(session, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(session, ("IWM", "SPY", "QQQ"), T)
    policy = TickPolicy(max_lag_seconds=0, lock_timeout_seconds=0.5)
    worker2_done = threading.Event()
    results2: list[Any] = []

    def worker2() -> None:
        try:
            with connect(db_url) as other:
                results2.append(engine.tick(other, T, only="b", deps=replace(deps(fake), policy=policy)))
        finally:
            worker2_done.set()

    thread = threading.Thread(target=worker2)

    def start_worker2() -> None:  # worker 1 holds a's claim and the account's lock
        thread.start()
        _wait_for_a_lock_wait(db_url)  # worker 2 claimed b and waits for the account

    def slow_answer_for_c(intent: OrderIntent, inner: Broker) -> Order:
        if intent.symbol == "QQQ":  # c's POST answers only after worker 2 has stopped waiting
            worker2_done.wait(20)
        return inner.submit(intent)

    base = hooked(replace(deps(fake), policy=policy), on_submit=slow_answer_for_c)
    w1 = _HookedDeps(**{f.name: getattr(base, f.name) for f in fields(engine.Deps)})
    w1.on_first_open = start_worker2
    result1 = engine.tick(session, T, deps=w1)
    thread.join(30)
    (result2,) = results2
    assert {r.strategy: r.outcome for r in result1.strategies}["b"] is StrategyOutcome.BUSY
    b_done = session.fetchone(
        "select st.last_run_minute from strategy_state st join strategy_definitions d"
        " on d.id = st.strategy_id where d.name = 'b'"
    )
    assert b_done == (T,) or result1.retryable or result2.retryable, (
        f"b run by nobody, neither invocation retried: {result2.strategies}"
    )
    if b_done != (T,):  # the scheduler retries the minute (HTTP 503): b is run then, once
        again = engine.tick(session, T, deps=replace(deps(fake), policy=policy))
        assert {r.strategy: r.outcome for r in again.strategies}["b"] is StrategyOutcome.PROCESSED
        b_orders = session.fetchone(
            "select count(*) from paper_trades t join strategy_definitions d on d.id = t.strategy_id"
            " where d.name = 'b'"
        )
        assert b_orders == (len(BOOKS["b"]),)
