"""Several Alpaca accounts in one invocation: each account's strategies on a thread and a
database connection of their own (`fanout`), one transaction per account, so one account's
outage, slowness or failure never stops another's.

Written as attacks on a variant that ran every Alpaca account's strategies in ONE transaction on
the caller's connection (f8c7be2, reverted): two of them broke it (an outage of one account
spent the shared deadline of the accounts after it; one slow account idled the shared
transaction past the idle timeout and ended the whole tick), which is why each account keeps
its own thread and connection. Each docstring starts HELD or BROKE (against that variant).

Real Postgres, the real alpaca-py client, the loopback Alpaca (`tests/fake_alpaca`) with one
account per key pair; accounts are named acct0, acct1, ... in ascending id (as text), and the
k-th trades with key pair k, so a test can put a bad account first, in the middle or last.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from strategy_engine import engine
from strategy_engine.brokers.base import Broker
from strategy_engine.core.errors import DatabaseUnavailable
from strategy_engine.core.models import Account, BrokerAccount, Limits, RunResult, StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import session as session_mod
from strategy_engine.store.intents import IntentLog
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_account_batch import _wrapping
from tests.test_alpaca_accounts import at, outcomes
from tests.test_exactly_once import T, entry_setup

P = StrategyOutcome.PROCESSED
Book = list[tuple[str, str]]  # one account's strategies: (name, symbol), in planned order


def _ref(k: int) -> str | None:
    return None if k == 0 else f"K{k}"


def _keys(k: int) -> tuple[str, str]:
    return (KEY, SECRET) if k == 0 else (f"PKATTACK{k:04d}", f"attack-secret-{k:04d}")


class Accounts:
    """The loopback Alpaca with `n` accounts, account k reached with key pair k (`_ref(k)`)."""

    def __init__(self, server: FakeAlpaca, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server, self.monkeypatch, self.fakes = server, monkeypatch, [server]

    def make(self, n: int) -> list[FakeAlpaca]:
        for k in range(len(self.fakes), n):
            key, secret = _keys(k)
            self.fakes.append(self.server.add_account(key, secret, f"PA3ATTK{k:04d}"))
            self.monkeypatch.setenv(f"ALPACA_K{k}_API_KEY", key)
            self.monkeypatch.setenv(f"ALPACA_K{k}_SECRET_KEY", secret)
        get_settings.cache_clear()
        return self.fakes[:n]


@pytest.fixture
def alpaca(monkeypatch: pytest.MonkeyPatch) -> Iterator[Accounts]:
    with FakeAlpaca() as first:
        monkeypatch.setenv("ALPACA_BASE_URL", first.url)
        monkeypatch.setenv("ALPACA_API_KEY", KEY)
        monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
        monkeypatch.setenv("ALPACA_TIMEOUT_SECONDS", "2")
        get_settings.cache_clear()
        yield Accounts(first, monkeypatch)
    get_settings.cache_clear()


def layout(s: Session, books: list[Book], limits: dict[str, Limits] | None = None) -> list[str]:
    """Alpaca accounts acct0, acct1, ... named in ascending id (as text), acctk
    holding `books[k]` and trading with key pair k; every symbol wants to enter long at T.
    Returns the account names."""
    with s.transaction():
        ids = [acct_store.ensure_account(s, f"tmp{k}", "alpaca") for k in range(len(books))]
    for rank, row_id in enumerate(sorted(ids, key=str)):
        s.execute(
            "update broker_accounts set name = %s, credentials_ref = %s where id = %s",
            (f"acct{rank}", _ref(rank), row_id),
        )
    for rank, book in enumerate(books):
        for name, symbol in book:
            seed(
                s, name=name, account=f"acct{rank}", broker="alpaca", config={"symbols": [symbol]},
                limits=(limits or {}).get(name),
            )  # fmt: skip
    entry_setup(s, tuple(sorted({sym for book in books for _, sym in book})), T)
    return [f"acct{k}" for k in range(len(books))]


def rows(s: Session) -> list[tuple[str, str, str, str | None, str]]:
    """paper_trades: (account, strategy, client id, broker id, status)."""
    return [
        (r[0], r[1], r[2], r[3], r[4])
        for r in s.fetchall(
            "select a.name, d.name, t.client_order_id, t.broker_order_id, t.status from paper_trades t"
            " join broker_accounts a on a.id = t.account_id"
            " join strategy_definitions d on d.id = t.strategy_id order by 2, 3"
        )
    ]


def check_books(s: Session, fakes: list[FakeAlpaca], *, settled: bool = True) -> None:
    """Every order each Alpaca account holds has its row, on that account (with the broker's id
    once `settled`); one row per client id; one order per client id at each account."""
    got = rows(s)
    cids = [r[2] for r in got]
    assert len(cids) == len(set(cids)), got
    for k, fake in enumerate(fakes):
        held = {o["client_order_id"]: o for o in fake.orders.values()}
        assert len(held) == len(fake.orders), f"acct{k}: two orders under one client id"
        mine = {r[2]: r for r in got if r[0] == f"acct{k}"}
        assert set(held) <= set(mine), (
            f"acct{k} holds orders the database does not know: {held.keys() - mine}"
        )
        for cid, order in held.items():
            if settled:
                assert mine[cid][3] == order["id"], mine[cid]
            else:
                assert mine[cid][3] in (None, order["id"]), mine[cid]
        for cid, row in mine.items():  # a settled row the account does not hold would be a lie
            if cid not in held and settled:
                assert row[4] in ("intent", "void", "rejected"), row


def done_at(s: Session) -> dict[str, datetime | None]:
    return dict(
        s.fetchall(
            "select d.name, st.last_run_minute from strategy_state st"
            " join strategy_definitions d on d.id = st.strategy_id"
        )
    )


def logged(s: Session) -> dict[tuple[str, str], tuple[str, str | None]]:
    """strategy_logs of minute T: (strategy, symbol) -> (outcome, risk_code)."""
    return {
        (r[0], r[1]): (r[2], r[3])
        for r in s.fetchall(
            "select d.name, l.symbol, l.outcome, l.risk_code from strategy_logs l"
            " join strategy_definitions d on d.id = l.strategy_id"
        )
    }


def kinds(result: RunResult) -> dict[str, StrategyOutcome]:
    return {k: v[0] for k, v in outcomes(result).items()}


def policy(**kw: Any) -> TickPolicy:
    return TickPolicy(**{"max_lag_seconds": 0, **kw})


# ---------------------------------------------------------------------------------------------
# 1. kill -9 while two accounts trade, then the minute run again.
# ---------------------------------------------------------------------------------------------

# kill -9 points (`tests/kill_points.py`): acct0's order accepted (acct1 mid-staging or not yet);
# acct1's first intents committed, not posted; acct1's strategies recorded in their savepoints,
# its COMMIT not sent.
KILL_AT = {
    "first-post": ("after-post", "SPY"),
    "second-intents": ("after-intents", "IWM"),
    "before-commit": ("before-commit", "r"),
}
KILL_BOOKS: list[Book] = [[("p", "SPY")], [("q", "IWM"), ("r", "QQQ")]]


@pytest.mark.parametrize("where", ["first-post", "second-intents", "before-commit"])
@pytest.mark.parametrize("fill", ["instant", "manual"])
def test_kill_while_two_accounts_trade_then_the_retry_knows_every_order_once(
    db_url: str, alpaca: Accounts, where: str, fill: str
) -> None:
    """HELD: killed after acct0's POST was accepted, after acct1's intents were committed (not
    posted), or after acct1's record savepoints (no COMMIT; acct0's transaction, on its own
    thread, may have committed or not): two retries leave every order each account holds with its row and the broker's
    id, one order per client id, and nothing POSTed twice. An intent committed but not posted
    before the kill is presumed in flight (younger than `in_flight_seconds`) and not sent by
    the retry: its strategy's minute goes without that order (conservative, as designed)."""
    fakes = alpaca.make(2)
    for fake in fakes:
        fake.set_policy(fill)
    with connect(db_url) as s:
        layout(s, KILL_BOOKS)
    killed = subprocess.run(
        [sys.executable, "-m", "tests.kill_points", db_url, T.isoformat(), *KILL_AT[where]],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert killed.returncode == 137, killed.stderr
    with connect(db_url) as s:
        check_books(s, fakes, settled=False)  # even before any retry: every order has its intent
        for _ in range(2):
            engine.tick(s, T, deps=replace(at(T), policy=policy()))
        check_books(s, fakes)
        assert done_at(s) == {"p": T, "q": T, "r": T}
        assert sorted(r[1] for r in rows(s)) == ["p", "q", "r"]  # one row per decided order
        # an intent committed but never posted (killed before its POST: acct1's, while acct0's
        # POST is answered, or at second-intents) is presumed in flight: not sent again
        placed = {r[1] for r in rows(s) if r[3] is not None}
    assert placed >= {"before-commit": {"p", "q", "r"}, "first-post": {"p"}}.get(where, set())
    # nothing POSTed twice: each client id reached the broker in one whole POST, which placed
    # its order (a POST the kill cut off mid-body is counted by the server but never read)
    for f in fakes:
        assert sorted(f.posted) == sorted({o["client_order_id"] for o in f.orders.values()})
    assert [len(f.orders) for f in fakes] == [len(placed & {"p"}), len(placed - {"p"})]


# ---------------------------------------------------------------------------------------------
# 2. Two invocations overlapping on the same accounts.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["full-and-only", "two-full", "only-first-and-full"])
def test_overlapping_invocations_never_deadlock_nor_send_twice(
    db_url: str, alpaca: Accounts, shape: str
) -> None:
    """HELD: a full tick beside an `only=` tick of a strategy of the second account (or of the
    first), or two full ticks started together from two connections: no strategy fails (no
    deadlock error), busy answers are retryable, and once the retryable invocations are
    retried every strategy ran exactly once and every order was POSTed once."""
    fakes = alpaca.make(3)
    books: list[Book] = [[("a1", "SPY"), ("a2", "IWM")], [("b1", "QQQ"), ("b2", "SPY")], [("c", "IWM")]]
    with connect(db_url) as s:
        layout(s, books)
    for fake in fakes:
        fake.slow("POST /v2/orders", 0.3, times=100)  # the batches hold their locks a while
    d = replace(at(T), policy=policy(lock_timeout_seconds=0.4))
    only = {"full-and-only": ("b1", None), "two-full": (None, None), "only-first-and-full": ("a2", None)}[
        shape
    ]
    start = threading.Barrier(2, timeout=10)
    results: list[RunResult] = []
    errors: list[BaseException] = []

    def worker(name: str | None) -> None:
        try:
            with connect(db_url) as conn:
                start.wait()
                results.append(engine.tick(conn, T, only=name, deps=d))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in only]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    every = [r for result in results for r in result.strategies]
    assert not [r for r in every if r.outcome is StrategyOutcome.FAILED], every
    assert all(r.retryable for r in every if r.outcome is StrategyOutcome.BUSY and r.error), every
    with connect(db_url) as s:
        pending = [n for n, m in done_at(s).items() if m != T]
        assert not pending or any(r.retryable for r in results), (pending, every)  # someone retries
        for _ in range(3):  # the scheduler's retries
            if all(m == T for m in done_at(s).values()):
                break
            engine.tick(s, T, deps=d)
        assert done_at(s) == {name: T for book in books for name, _ in book}
        check_books(s, fakes)
        assert sorted(r[1] for r in rows(s)) == ["a1", "a2", "b1", "b2", "c"]
        assert len(logged(s)) == 5  # each strategy-minute recorded once
    assert [len(f.orders) for f in fakes] == [2, 2, 1]
    assert [f.requests["POST /v2/orders"] for f in fakes] == [2, 2, 1]


# ---------------------------------------------------------------------------------------------
# 3. A bad account in the middle (acct1 of three).
# ---------------------------------------------------------------------------------------------

MIDDLE: list[Book] = [[("a", "SPY")], [("b1", "IWM"), ("b2", "QQQ")], [("c", "SPY")]]


@pytest.mark.parametrize("bad", ["refused", "number-mismatch", "outage"])
def test_a_bad_account_in_the_middle_fails_its_own_strategies_only(
    session: Session, alpaca: Accounts, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """HELD: acct1 (second of three in lock order) with keys Alpaca refuses (401), with a recorded
    account number its keys no longer reach, or with every read failing (503 beyond the 1s
    budget): a (before it) and c (after it) are processed, their orders at their accounts and
    recorded; b1 and b2 fail, nothing is sent on acct1; an outage's failures are retryable."""
    fakes = alpaca.make(3)
    layout(session, MIDDLE)
    if bad == "refused":
        monkeypatch.setenv("ALPACA_K1_API_KEY", "PKWRONGKEY0009")
    elif bad == "number-mismatch":
        session.execute("update broker_accounts set alpaca_account_number = 'PA3OTHER' where name = 'acct1'")
    else:
        monkeypatch.setenv("ALPACA_RETRY_BUDGET_SECONDS", "1")
        for route in ("GET /v2/account", "GET /v2/positions", "GET /v2/orders"):
            fakes[1].fail(route, 503, times=10_000)
    get_settings.cache_clear()
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    got = outcomes(result)
    assert (got["a"], got["c"]) == ((P, None), (P, None)), got
    assert got["b1"][0] is got["b2"][0] is StrategyOutcome.FAILED, got
    if bad == "outage":
        assert {r.strategy: r.retryable for r in result.strategies if r.strategy.startswith("b")} == {
            "b1": True,
            "b2": True,
        }
    assert [len(f.orders) for f in fakes] == [1, 0, 1]
    check_books(session, fakes)
    assert sorted((r[0], r[1]) for r in rows(session)) == [("acct0", "a"), ("acct2", "c")]


def test_an_outage_of_a_middle_account_does_not_starve_the_accounts_after_it(
    session: Session, alpaca: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BROKE the one-transaction variant; HELD with a thread per account. acct1 (middle) in outage, its reads answering 503, each read retried for its
    budget (2s budget, 1s timeout: retries for ~1s); the deadline 2.5s. Each of acct1's three
    strategies reads the broker again (the first also waits for the read sent ahead): ~3s of
    the one batch, so c on acct2 answers `deadline` although its own account is healthy, and
    will again on every retry while the outage lasts. With a thread per account (before
    f8c7be2) c ran beside acct1. Production: a 20s budget with a 10s timeout, the 45s
    deadline: a hung account (each read up to 20s) with two strategies takes ~60s."""
    fakes = alpaca.make(3)
    layout(session, [[("a", "SPY")], [("b1", "IWM"), ("b2", "QQQ"), ("b3", "DIA")], [("c", "SPY")]])
    monkeypatch.setenv("ALPACA_RETRY_BUDGET_SECONDS", "2")
    monkeypatch.setenv("ALPACA_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    for route in ("GET /v2/account", "GET /v2/positions", "GET /v2/orders"):
        fakes[1].fail(route, 503, times=10_000)
    began = time.monotonic()
    d = engine.Deps(
        clock=lambda: T + timedelta(seconds=2 + time.monotonic() - began), policy=policy(deadline_seconds=2.5)
    )
    result = engine.tick(session, T, deps=d)
    got = kinds(result)
    assert {got["b1"], got["b2"], got["b3"]} <= {StrategyOutcome.FAILED, StrategyOutcome.DEADLINE}
    assert got["a"] is P
    assert got["c"] is P, got  # its account answers: an outage elsewhere must not stop it
    assert len(fakes[2].orders) == 1


def test_one_slow_account_in_the_middle_does_not_end_the_whole_tick(
    session: Session, alpaca: Accounts, db_url: str
) -> None:
    """BROKE the one-transaction variant; HELD with a connection per account. acct1's account
    read answers after 2.5s, the idle timeout is 1s (production: 60s
    against reads of up to 20s each, waited one after another inside the stage: the read sent
    ahead, a read again, a lookup per unsettled order). b1 waits for it inside the batch's one
    transaction, so the server ends the invocation's connection: the tick raises
    DatabaseUnavailable, a's order is at acct0 with only its intent, c (acct2, healthy) and s
    (simulated) never run, the run row stays `running`. With a connection per account, only
    acct1's strategies failed."""
    fakes = alpaca.make(3)
    layout(session, MIDDLE)
    seed(session, name="s", account="sim", config={"symbols": ["QQQ"]})
    fakes[1].slow("GET /v2/account", 2.5, times=2)
    try:
        result = engine.tick(session, T, deps=replace(at(T), policy=policy(idle_timeout_seconds=1.0)))
    except DatabaseUnavailable as exc:
        pytest.fail(f"one slow account ended the whole tick: {exc!r}")
    got = kinds(result)
    assert (got["a"], got["c"], got["s"]) == (P, P, P), got
    with connect(db_url) as s:
        check_books(s, fakes)


# ---------------------------------------------------------------------------------------------
# 4. Carry-forward is per account.
# ---------------------------------------------------------------------------------------------


def test_orders_sent_on_one_account_are_not_working_orders_of_another(
    session: Session, alpaca: Accounts
) -> None:
    """HELD: a on acct0 and b on acct1 both buy SPY, orders left working (manual fills), b with
    max_open_positions=1: b orders, sized as a was (its account has no working SPY order, no
    position); a2, beside a on acct0, holds (a's working buy is the position it sees): the
    carry is real and stays on its own account."""
    fakes = alpaca.make(2)
    for fake in fakes:
        fake.set_policy("manual")
    layout(
        session,
        [[("a", "SPY"), ("a2", "SPY")], [("b", "SPY")]],
        limits={"b": Limits(max_open_positions=1)},
    )
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    assert kinds(result) == {"a": P, "a2": P, "b": P}
    got = logged(session)
    assert got[("a", "SPY")] == ("ordered", None)
    assert got[("a2", "SPY")] == ("held", None)  # the control: a's working buy is a2's position
    assert got[("b", "SPY")] == ("ordered", None)  # acct0's order is not acct1's
    assert [len(f.orders) for f in fakes] == [1, 1]
    a_qty, b_qty = (next(iter(f.orders.values()))["qty"] for f in fakes)
    assert a_qty == b_qty  # b sized as if nothing were working on its account
    check_books(session, fakes)


# ---------------------------------------------------------------------------------------------
# 5. The deadline passing while the accounts trade.
# ---------------------------------------------------------------------------------------------


def test_the_invocation_deadline_passing_while_accounts_trade_stops_every_later_strategy(
    session: Session, alpaca: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HELD: the invocation's clock passes its deadline once the first intents are committed
    (their POSTs then go, as committed intents do). The accounts run at once, so which strategy
    gets there first is not fixed: every strategy whose intents were committed is processed,
    its orders at its own account and recorded; every other one answers `deadline` with
    nothing written or sent."""
    fakes = alpaca.make(2)
    layout(session, [[("a", "SPY")], [("b1", "IWM"), ("b2", "QQQ")]])
    late = threading.Event()
    wrote: list[str] = []
    write = IntentLog.write

    def write_then_late(self: IntentLog, *args: Any, **kwargs: Any) -> Any:
        out = write(self, *args, **kwargs)
        wrote.extend(i.symbol for i in args[4])
        late.set()
        return out

    monkeypatch.setattr(IntentLog, "write", write_then_late)
    d = engine.Deps(
        clock=lambda: T + timedelta(seconds=100 if late.is_set() else 2), policy=policy(deadline_seconds=45)
    )
    result = engine.tick(session, T, deps=d)
    symbol = {"a": "SPY", "b1": "IWM", "b2": "QQQ"}
    sent = {name for name, sym in symbol.items() if sym in wrote}
    assert sent, "no strategy committed its intents before the deadline"
    assert kinds(result) == {name: P if name in sent else StrategyOutcome.DEADLINE for name in symbol}
    assert result.status == "deadline"  # the scheduler retries a `deadline` minute
    assert sorted(r[1] for r in rows(session)) == sorted(sent)
    assert [len(f.orders) for f in fakes] == [len(sent & {"a"}), len(sent - {"a"})]
    check_books(session, fakes)


def test_the_wall_clock_send_by_passing_mid_batch_voids_the_later_accounts_intents(
    session: Session, alpaca: Accounts
) -> None:
    """HELD: deadline 1s on the wall clock (`send_by`), the invocation's own clock frozen; acct1's
    account read answers after 1.5s: a's order (sent at once) is at acct0 and recorded; b1
    and b2 were decided but their POSTs refused before any attempt: decisions `blocked`
    (deadline), intents `void`, nothing at acct1."""
    fakes = alpaca.make(2)
    layout(session, [[("a", "SPY")], [("b1", "IWM"), ("b2", "QQQ")]])
    fakes[1].slow("GET /v2/account", 1.5)
    result = engine.tick(session, T, deps=replace(at(T), policy=policy(deadline_seconds=1.0)))
    got = kinds(result)
    assert got["a"] is P
    assert got["b1"] is got["b2"] is StrategyOutcome.DEADLINE, outcomes(result)
    assert [len(f.orders) for f in fakes] == [1, 0]
    assert fakes[1].requests["POST /v2/orders"] == 0
    by = {r[1]: r for r in rows(session)}
    assert by["a"][3] is not None and by["a"][0] == "acct0"
    assert (by["b1"][4], by["b2"][4]) == ("void", "void")
    assert logged(session)[("b1", "IWM")] == ("blocked", "deadline")
    check_books(session, fakes)


# ---------------------------------------------------------------------------------------------
# 6. A database error in one strategy's record savepoint.
# ---------------------------------------------------------------------------------------------


def _arm(
    s: Session, table: str, when: str, *, after: bool = False, deferred: bool = False, body: str | None = None
) -> None:
    """A trigger on `table` running `body` (by default: raising 'attack: <table> refused') for the
    rows matching `when` while attack_armed has a row: before each row's insert or update, after
    it (`after`), or at COMMIT (`deferred`: a constraint trigger)."""
    body = body or f"raise exception 'attack: {table} refused';"
    kind = "constraint trigger" if deferred else "trigger"
    timing = "after" if after or deferred else "before"
    later = "deferrable initially deferred" if deferred else ""
    s.execute(
        f"""
        create table if not exists attack_armed (x int);
        insert into attack_armed values (1);
        create or replace function attack_raise_{table}() returns trigger language plpgsql as $$
        begin
          if ({when}) and exists (select 1 from attack_armed) then
            {body}
          end if;
          return new;
        end $$;
        create {kind} attack_{table} {timing} insert or update on {table} {later}
          for each row execute function attack_raise_{table}();
        """
    )


def _strategy(name: str) -> str:
    return f"(select id from strategy_definitions where name = '{name}')"


def test_a_database_error_recording_one_strategy_rolls_back_its_savepoint_alone(
    session: Session, alpaca: Accounts
) -> None:
    """HELD: writing a1's decisions raises (a trigger) in its record savepoint: a1 fails, its
    order at acct0 stays known by its committed intent; a2 (same account) and b (acct1) are
    recorded and committed. Disarmed, the retry reconciles a1's order (reconciled 1, orders 0)
    and POSTs nothing again."""
    fakes = alpaca.make(2)
    layout(session, [[("a1", "SPY"), ("a2", "IWM")], [("b", "QQQ")]])
    _arm(session, "strategy_logs", f"new.strategy_id = {_strategy('a1')}")
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    got = outcomes(result)
    assert got["a1"][0] is StrategyOutcome.FAILED and "strategy_logs refused" in (got["a1"][1] or "")
    assert (got["a2"], got["b"]) == ((P, None), (P, None))
    assert {k[0] for k in logged(session)} == {"a2", "b"}
    assert done_at(session) == {"a1": None, "a2": T, "b": T}
    check_books(session, fakes, settled=False)
    session.execute("delete from attack_armed")
    again = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    assert [
        (r.strategy, r.outcome, r.orders, r.reconciled) for r in again.strategies if r.strategy == "a1"
    ] == [("a1", P, 0, 1)]
    assert [f.requests["POST /v2/orders"] for f in fakes] == [2, 1]
    check_books(session, fakes)


# ---------------------------------------------------------------------------------------------
# 7. Simulated and Alpaca strategies in one invocation.
# ---------------------------------------------------------------------------------------------


def test_a_failed_commit_of_the_alpaca_batch_leaves_the_simulated_strategies_processed(
    session: Session, alpaca: Accounts
) -> None:
    """HELD: the Alpaca batch's one COMMIT fails (a deferred constraint on strategy_state of the
    Alpaca strategies): a and b fail, their orders known by their intents; the simulated s
    (run after the batch) is processed and committed. The retry reconciles a and b."""
    fakes = alpaca.make(2)
    layout(session, [[("a", "SPY")], [("b", "IWM")]])
    seed(session, name="s", account="sim", config={"symbols": ["QQQ"]})
    entry_setup(session, ("QQQ",), T)
    when = f"tg_op = 'UPDATE' and new.last_run_minute is not null and new.strategy_id <> {_strategy('s')}"
    _arm(session, "strategy_state", when, deferred=True, body="raise exception 'attack: commit refused';")
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    got = outcomes(result)
    assert got["s"] == (P, None)
    assert got["a"][0] is got["b"][0] is StrategyOutcome.FAILED and "commit refused" in (got["a"][1] or "")
    assert {k[0] for k in logged(session)} == {"s"}
    assert done_at(session)["s"] == T
    check_books(session, fakes, settled=False)
    session.execute("delete from attack_armed")
    again = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    assert kinds(again) == {"a": P, "b": P, "s": StrategyOutcome.ALREADY_PROCESSED}
    assert [f.requests["POST /v2/orders"] for f in fakes] == [1, 1]
    check_books(session, fakes)


def test_a_failing_simulated_strategy_leaves_the_alpaca_batch_committed(
    session: Session, alpaca: Accounts
) -> None:
    """HELD: the simulated s fails writing its decisions (a trigger), after the Alpaca batch:
    a and b (two accounts) are processed and committed, s alone fails."""
    fakes = alpaca.make(2)
    layout(session, [[("a", "SPY")], [("b", "IWM")]])
    seed(session, name="s", account="sim", config={"symbols": ["QQQ"]})
    entry_setup(session, ("QQQ",), T)
    _arm(session, "strategy_logs", f"new.strategy_id = {_strategy('s')}")
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    got = kinds(result)
    assert (got["a"], got["b"], got["s"]) == (P, P, StrategyOutcome.FAILED)
    assert {k[0] for k in logged(session)} == {"a", "b"}
    assert done_at(session) == {"a": T, "b": T, "s": None}
    check_books(session, fakes)


# ---------------------------------------------------------------------------------------------
# 8. More accounts than the pools; accounts with nothing active.
# ---------------------------------------------------------------------------------------------


def test_eighteen_accounts_more_than_every_pool_all_trade_once(session: Session, alpaca: Accounts) -> None:
    """HELD: 18 accounts (more than the 16 threads sending reads ahead and the 10 POSTs at once),
    one strategy each, plus an account whose only strategy is inactive: every active strategy
    is processed, each account holds its one order, recorded; the inactive one sends nothing."""
    n = 18
    fakes = alpaca.make(n + 1)
    layout(session, [[(f"s{k:02d}", "SPY")] for k in range(n + 1)])
    session.execute(f"update strategy_definitions set is_active = false where name = 's{n:02d}'")
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    got = kinds(result)
    assert {k: v for k, v in got.items() if k != f"s{n:02d}"} == {f"s{k:02d}": P for k in range(n)}
    assert [len(f.orders) for f in fakes] == [1] * n + [0]
    check_books(session, fakes)
    assert sorted((r[0], r[1]) for r in rows(session)) == sorted((f"acct{k}", f"s{k:02d}") for k in range(n))


def test_two_strategies_of_one_account_listed_apart_in_planned_order_share_its_lock_and_carry(
    session: Session, alpaca: Accounts
) -> None:
    """HELD: planned (name) order a-x (acct1), m (acct0), z-x (acct1): acct1's two strategies are
    batched together, the later holding on the earlier's working SPY order (carry, same
    account); acct0's m buys SPY too, untouched by acct1's. Reported in planned order."""
    fakes = alpaca.make(2)
    for fake in fakes:
        fake.set_policy("manual")
    layout(session, [[("m", "SPY")], [("a-x", "SPY"), ("z-x", "SPY")]])
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    assert [r.strategy for r in result.strategies] == ["a-x", "m", "z-x"]
    assert kinds(result) == {"a-x": P, "m": P, "z-x": P}
    got = logged(session)
    assert (got[("a-x", "SPY")], got[("m", "SPY")], got[("z-x", "SPY")]) == (
        ("ordered", None),
        ("ordered", None),
        ("held", None),
    )
    assert [len(f.orders) for f in fakes] == [1, 1]
    check_books(session, fakes)


def test_an_order_refused_on_one_account_does_not_stop_the_next(session: Session, alpaca: Accounts) -> None:
    """HELD: acct0's POST is refused (403): a's decision is `failed`, its row `rejected`; b on
    acct1 is processed, its order recorded."""
    fakes = alpaca.make(2)
    layout(session, [[("a", "SPY")], [("b", "IWM")]])
    fakes[0].fail("POST /v2/orders", 403, times=10)
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    got = kinds(result)
    assert got["b"] is P
    assert got["a"] in (P, StrategyOutcome.FAILED)
    assert [len(f.orders) for f in fakes] == [0, 1]
    assert logged(session)[("b", "IWM")] == ("ordered", None)
    assert logged(session)[("a", "SPY")][0] == "failed"
    check_books(session, fakes)


# ---------------------------------------------------------------------------------------------
# One intent connection for the whole invocation (fanout.run_all, IntentLog): opened ahead once
# when an account is on a real broker, never for simulated accounts alone. Killed mutant
# fanout 27 in its earlier form (a connection per group).
# ---------------------------------------------------------------------------------------------


def _opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The application names of the connections the engine opens from now on."""
    names: list[str] = []
    real_open = session_mod._open

    def spy(conninfo: str, url: str, timeout: int, application_name: str, prepare: bool) -> Session:
        names.append(application_name)
        return real_open(conninfo, url, timeout, application_name, prepare)

    monkeypatch.setattr(session_mod, "_open", spy)
    return names


def test_one_intent_connection_serves_every_alpaca_account(
    session: Session, alpaca: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three Alpaca accounts on threads of their own and a simulated strategy on the caller's
    connection: one connection per Alpaca account and one, opened ahead from the caller's
    thread, for every account's intents; each account's order placed with its intent written
    first, and every connection closed when the tick returns."""
    fakes = alpaca.make(3)
    layout(session, [[("p", "IWM")], [("q", "QQQ")], [("r", "SPY")]])
    seed(session, name="sim", account="sim-acct", config={"symbols": ["SPY"]})
    ahead: list[str] = []
    real_open_ahead = IntentLog.open_ahead

    def spy(log: IntentLog) -> None:
        ahead.append(threading.current_thread().name)
        real_open_ahead(log)

    monkeypatch.setattr(IntentLog, "open_ahead", spy)
    opened = _opened(monkeypatch)
    result = engine.tick(session, T, deps=at(T))
    assert outcomes(result) == {"p": (P, None), "q": (P, None), "r": (P, None), "sim": (P, None)}
    assert sorted(opened) == ["strategy-engine-account"] * 3 + ["strategy-engine-side"], opened
    assert ahead == [threading.main_thread().name]
    assert [len(f.orders) for f in fakes] == [1, 1, 1]
    assert sorted((r[0], r[4]) for r in rows(session) if r[0] != "sim-acct") == [
        ("acct0", "accepted"),
        ("acct1", "accepted"),
        ("acct2", "accepted"),
    ]  # the broker's answer over each intent
    assert session.fetchone(
        "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
    ) == (0,)


def test_simulated_accounts_alone_open_no_intent_connection(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two simulated accounts: both run on the caller's connection, and no intent connection is
    opened, ahead or otherwise (they never write an intent)."""
    seed(session, name="a", account="sim-a", config={"symbols": ["SPY"]})
    seed(session, name="b", account="sim-b", config={"symbols": ["QQQ"]})
    opened = _opened(monkeypatch)
    result = engine.tick(session, T, deps=at(T))
    assert {r.strategy for r in result.strategies} == {"a", "b"}
    assert opened == []


def test_the_engines_connections_are_named_for_what_they_do(
    session: Session, db_url: str, alpaca: Accounts
) -> None:
    """While two Alpaca accounts trade, pg_stat_activity tells the invocation's connections apart
    (docs/operations.md, Settings, DATABASE_URL): the caller's `strategy-engine`, one
    `strategy-engine-account` per account on its thread, and the intents' `strategy-engine-side`."""
    alpaca.make(2)
    layout(session, [[("p", "IWM")], [("q", "QQQ")]])
    seen: list[list[str]] = []

    def look(_: object) -> None:
        with connect(db_url) as other:
            names = other.fetchall(
                "select application_name from pg_stat_activity"
                " where datname = current_database() and pid <> pg_backend_pid()"
            )
        seen.append(sorted(r[0] for r in names))

    result = engine.tick(session, T, deps=_wrapping(at(T), look))
    assert outcomes(result) == {"p": (P, None), "q": (P, None)}
    assert seen and all(
        {"strategy-engine", "strategy-engine-account", "strategy-engine-side"} <= set(names) for names in seen
    ), seen
    assert all(names.count("strategy-engine-account") <= 2 for names in seen), seen


def test_two_alpaca_accounts_are_processed_at_once(session: Session, alpaca: Accounts) -> None:
    """Each account's POST waits until the other account's POST is being sent: were the accounts
    processed one after another (one thread for both), the first would wait in vain (broken
    barrier) and its order fail."""
    alpaca.make(2)
    layout(session, [[("p", "IWM")], [("q", "QQQ")]])
    both = threading.Barrier(2, timeout=10)
    result = engine.tick(session, T, deps=_wrapping(at(T), lambda _intent: both.wait()))
    assert [(r.strategy, r.outcome, r.orders) for r in result.strategies] == [("p", P, 1), ("q", P, 1)]


def test_at_most_ten_alpaca_accounts_are_processed_at_once(session: Session, alpaca: Accounts) -> None:
    """The connection budget (docs/operations.md, DATABASE_URL: up to 12 a tick): twelve Alpaca
    accounts, each POST held until ten are being sent at once. Ten at once, never more (the
    eleventh and twelfth start as the first ones end); fewer at once would break the barrier."""
    books = [[(f"s{k:02d}", f"X{k:02d}")] for k in range(12)]
    alpaca.make(12)
    layout(session, books)
    lock, ten = threading.Lock(), threading.Barrier(10, timeout=10)  # the documented budget
    active, most, arrived = [0], [0], [0]

    def post(_intent: object) -> None:
        with lock:
            active[0] += 1
            most[0], arrived[0] = max(most[0], active[0]), arrived[0] + 1
            first_ten = arrived[0] <= 10
        try:
            if first_ten:
                ten.wait()
        finally:
            with lock:
                active[0] -= 1

    result = engine.tick(session, T, deps=_wrapping(at(T), post))
    assert [(r.outcome, r.orders) for r in result.strategies] == [(P, 1)] * 12
    assert (most[0], arrived[0]) == (10, 12)


class _HeldReads:
    """The real Alpaca broker, its account read and clock held until `parties` of them (over
    every account) are being asked at once; later ones pass straight through."""

    def __init__(self, inner: Broker, gate: threading.Barrier, seen: list[str], lock: threading.Lock) -> None:
        self._inner, self._gate, self._seen, self._lock = inner, gate, seen, lock

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def _held(self, what: str) -> None:
        with self._lock:
            self._seen.append(what)
            first = len(self._seen) <= self._gate.parties
        if first:
            self._gate.wait()

    def account(self) -> Account:
        self._held("account")
        return self._inner.account()

    def clock(self) -> tuple[datetime, bool]:
        self._held("clock")
        return self._inner.clock()


def test_fifteen_alpaca_accounts_reads_and_the_clock_are_all_sent_ahead_at_once(
    session: Session, alpaca: Accounts
) -> None:
    """`engine.MAX_AHEAD` (16 threads): one per Alpaca account and one for the broker clock.
    Fifteen accounts: each account read and the clock, sent ahead as the tick starts, is held
    until all sixteen are being asked at once. With fewer threads the reads of the last accounts
    would wait for the first ones to end, later in the minute (here the barrier breaks and the
    held reads fail)."""
    books = [[(f"s{k:02d}", f"X{k:02d}")] for k in range(15)]
    fakes = alpaca.make(15)
    layout(session, books)
    gate, lock = threading.Barrier(16, timeout=10), threading.Lock()
    seen: list[str] = []
    base = at(T)

    def make(account: BrokerAccount) -> Broker:
        return _HeldReads(base.alpaca_broker(account), gate, seen, lock)  # type: ignore[return-value]

    result = engine.tick(session, T, deps=replace(base, alpaca_broker=make))
    assert [(r.outcome, r.orders) for r in result.strategies] == [(P, 1)] * 15
    assert not gate.broken
    assert sorted(seen[:16]) == ["account"] * 15 + ["clock"]
    # every account read once: the reads sent ahead were the ones used
    assert [f.requests["GET /v2/account"] for f in fakes] == [1] * 15
