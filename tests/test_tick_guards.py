"""The invocation's rules on the real server: late minutes, the broker's clock, one deadline, the
minute ahead of the host clock, the switch and limits read under the claim, the account lock and
its timeouts. Clocks are injected: nothing here sleeps for more than a fraction of a second."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from strategy_engine import engine, execution
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core.errors import Busy, DatabaseUnavailable, LiveTradingRefused
from strategy_engine.core.models import Account, OrderIntent, Position, StrategyOutcome
from strategy_engine.invocation import MinuteRefused, TickPolicy
from strategy_engine.store import Session, connect
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.migrations import migrate
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT, POST
from tests.test_alpaca_engine import deps as alpaca_deps
from tests.test_exactly_once import SYMS, T, entry_setup


@dataclass
class Clock:
    """A host clock the test moves by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


def on_alpaca(fake: FakeAlpaca, clock: Clock, **policy: float) -> engine.Deps:
    d = alpaca_deps(fake)
    d.policy, d.clock = TickPolicy(**policy), clock
    return d


def logs_of(s: Session, name: str) -> list[tuple[Any, ...]]:
    return s.fetchall(
        "select l.symbol, l.outcome, l.risk_code from strategy_logs l"
        " join strategy_definitions d on d.id = l.strategy_id where d.name = %s order by l.symbol",
        (name,),
    )


def last_run(s: Session, name: str) -> Any:
    row = s.fetchone(
        "select st.last_run_minute from strategy_state st join strategy_definitions d on d.id = st.strategy_id"
        " where d.name = %s",
        (name,),
    )
    return None if row is None else row[0]


# ---- 3. old minutes never reach a broker ---------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "policy", "why"),
    [
        (91, {}, "minute is 91s old (MAX_TICK_LAG_SECONDS=90)"),
        (
            2,
            {"max_lag_seconds": 1},
            "minute is 2s old (MAX_TICK_LAG_SECONDS=1)",
        ),  # a one-second limit holds too
    ],
    ids=["default-limit", "one-second-limit"],
)
def test_a_minute_older_than_the_lag_limit_is_late_on_alpaca_and_nothing_is_asked_or_sent(
    session: Session,
    fake: FakeAlpaca,
    caplog: pytest.LogCaptureFixture,
    age: float,
    policy: dict[str, float],
    why: str,
) -> None:
    seed(session, account=ACCOUNT, broker="alpaca", config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    caplog.set_level(logging.INFO)
    late = engine.tick(session, T, deps=on_alpaca(fake, Clock(T + timedelta(seconds=age)), **policy))
    assert (late.status, late.strategies[0].outcome, late.strategies[0].error) == (
        "late",
        StrategyOutcome.LATE,
        why,
    )
    # A retry would be as late: not retryable, so the HTTP tick answers 200 and no retry comes.
    assert (late.strategies[0].retryable, late.retryable) == (False, False)
    # The line operators read for it (docs/operations.md, `late`): which run, strategy, minute, why.
    said = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "strategy not run"]
    assert said == [
        {
            "run_id": str(late.run_id),
            "strategy": "nft",
            "minute": T.isoformat(),
            "outcome": "late",
            "reason": why,
        }
    ]
    assert sum(fake.requests.values()) == 0
    assert session.fetchall("select status, orders from engine_runs") == [("late", 0)]
    assert session.fetchone("select count(*) from strategy_logs") == (0,)
    assert last_run(session, "nft") is None  # never claimed: the record is the run's


@pytest.mark.parametrize(
    ("age", "policy"),
    [(timedelta(seconds=90), {}), (timedelta(days=30), {"max_lag_seconds": 0})],
    ids=["at-the-limit", "check-off"],
)
def test_a_minute_at_the_lag_limit_or_with_the_check_off_trades(
    session: Session, fake: FakeAlpaca, age: timedelta, policy: dict[str, float]
) -> None:
    seed(session, account=ACCOUNT, broker="alpaca", config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    result = engine.tick(session, T, deps=on_alpaca(fake, Clock(T + age), **policy))
    assert (result.status, result.orders, fake.requests[POST]) == ("ok", 3, 3)


def test_a_simulated_account_replays_any_minute(session: Session) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    result = engine.tick(session, T, deps=engine.Deps(clock=Clock(T + timedelta(days=400))))
    assert (result.status, result.orders) == ("ok", 3)


# ---- 9. the broker's clock, one deadline, a minute ahead -----------------------------------------


def test_the_brokers_clock_closed_is_market_closed_asked_once_and_the_disagreement_logged(
    session: Session, fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("a", "b"):
        seed(session, name=name, account=ACCOUNT, broker="alpaca", config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    fake.is_open = False  # an unscheduled closure the installed calendar does not know
    fake.clock_at = T + timedelta(seconds=1)  # the broker's own time, as /v2/clock tells it
    caplog.set_level(logging.INFO)
    result = engine.tick(session, T, deps=on_alpaca(fake, Clock(T + timedelta(seconds=2))))
    assert result.status == "market_closed"
    why = "the broker's clock says the market is closed"  # the error a person reads in the run's detail
    assert [(r.outcome, r.error) for r in result.strategies] == [(StrategyOutcome.MARKET_CLOSED, why)] * 2
    # Asked once; the account's reads were sent ahead with it (read-only), nothing else was sent.
    assert fake.requests == {
        "GET /v2/clock": 1,
        "GET /v2/account": 1,
        "GET /v2/positions": 1,
        "GET /v2/orders": 2,  # the open list and the recent list
    }
    # The warning operators read (docs/operations.md, broker-clock disagreement): once, with both sides.
    said = [r for r in caplog.records if r.getMessage() == "broker clock disagrees with the calendar"]
    assert [r.levelno for r in said] == [logging.WARNING]
    fields = dict(said[0].fields)  # type: ignore[attr-defined]
    assert datetime.fromisoformat(fields.pop("broker_time")) == T + timedelta(seconds=1)  # New York's offset
    assert fields == {
        "broker": "alpaca",
        "minute": T.isoformat(),
        "broker_open": False,
        "calendar_open": True,
    }

    fake.is_open = True
    opened = engine.tick(session, T, deps=on_alpaca(fake, Clock(T + timedelta(seconds=3))))
    assert (opened.status, opened.orders) == ("ok", 3)  # b then sees a's position: holds
    assert [r.outcome for r in opened.strategies] == [StrategyOutcome.PROCESSED] * 2
    assert fake.requests["GET /v2/clock"] == 2  # once more for the second invocation, not per strategy


def test_the_brokers_clock_is_asked_as_the_tick_starts_not_after_a_strategys_claim(
    session: Session, fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock is sent with the account's reads as the tick begins (docs/architecture.md), so a
    strategy does not wait for it after its claim: when the claim is made, the request is out."""
    seed(session, account=ACCOUNT, broker="alpaca", config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    claim, asked = strat_store.claim, []

    def claim_once_asked(s: Session, *args: Any) -> Any:
        give_up = time.monotonic() + 5.0  # loopback: the request sent ahead arrives in milliseconds
        while fake.requests["GET /v2/clock"] == 0 and time.monotonic() < give_up:
            time.sleep(0.01)
        asked.append(fake.requests["GET /v2/clock"])
        return claim(s, *args)

    monkeypatch.setattr(strat_store, "claim", claim_once_asked)
    result = engine.tick(session, T, deps=on_alpaca(fake, Clock(T + timedelta(seconds=2))))
    assert (result.status, result.orders, asked, fake.requests["GET /v2/clock"]) == ("ok", 3, [1], 1)


def test_the_policy_is_read_from_the_settings_each_in_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MAX_TICK_LAG_SECONDS": "91",
        "TICK_DEADLINE_SECONDS": "44",
        "DB_LOCK_TIMEOUT_SECONDS": "6",
        "DB_IDLE_TIMEOUT_SECONDS": "61",
        "ALPACA_RETRY_BUDGET_SECONDS": "19",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert TickPolicy.from_settings() == TickPolicy(
        max_lag_seconds=91,
        deadline_seconds=44,
        lock_timeout_seconds=6,
        idle_timeout_seconds=61,
        broker_budget_seconds=19,
    )


class SlowSimulated(SimulatedBroker):
    """A simulated broker whose every order takes `seconds` of the injected clock."""

    host_clock: Clock
    seconds: float = 0.0

    def submit(self, intent: OrderIntent) -> Any:
        self.host_clock.now += timedelta(seconds=self.seconds)
        return super().submit(intent)


def slow_deps(clock: Clock, seconds: float, on_open: float = 0.0, **policy: float) -> engine.Deps:
    def build(acct: Account, pos: list[Position], minute: datetime, slip: float) -> SimulatedBroker:
        clock.now += timedelta(seconds=on_open)
        broker = SlowSimulated(acct.cash, pos, slip, now=minute)
        broker.host_clock, broker.seconds = clock, seconds
        return broker

    return engine.Deps(simulated_broker=build, clock=clock, policy=TickPolicy(**policy))


def test_past_the_deadline_nothing_new_starts_what_was_done_is_committed_and_the_retry_finishes(
    session: Session,
) -> None:
    for name in ("a", "b"):
        seed(session, name=name, account=name, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    clock = Clock(T + timedelta(seconds=1))
    first = engine.tick(session, T, deps=slow_deps(clock, 16.0))  # a's 3 orders take 48 s
    assert first.status == "deadline"
    assert [(r.outcome, r.orders) for r in first.strategies] == [
        (StrategyOutcome.PROCESSED, 3),
        (StrategyOutcome.DEADLINE, 0),
    ]
    assert [x[1] for x in logs_of(session, "a")] == ["ordered"] * 3
    assert logs_of(session, "b") == [] and last_run(session, "b") is None
    detail = session.fetchone("select status, detail from engine_runs")
    assert detail is not None and detail[0] == "deadline"
    assert [d["outcome"] for d in detail[1]] == ["processed", "deadline"]

    retry = engine.tick(session, T, deps=slow_deps(clock, 0.0))
    assert [r.outcome for r in retry.strategies] == [
        StrategyOutcome.ALREADY_PROCESSED,
        StrategyOutcome.PROCESSED,
    ]
    assert session.fetchone("select count(*) from paper_trades") == (6,)


@pytest.mark.parametrize("spent", [46.0, 45.0], ids=["past", "exactly-at"])  # reaching it is past it
def test_a_deadline_spent_inside_the_strategys_transaction_rolls_it_back_unsent(
    session: Session, spent: float
) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    clock = Clock(T + timedelta(seconds=1))
    result = engine.tick(session, T, deps=slow_deps(clock, 0.0, on_open=spent))  # the refresh took `spent` s
    why = "past the invocation's 45s deadline"  # TickPolicy's default: what the run's error tells a person
    assert [(r.outcome, r.orders, r.error) for r in result.strategies] == [(StrategyOutcome.DEADLINE, 0, why)]
    detail = session.fetchone("select detail from engine_runs")
    assert detail is not None and [(d["outcome"], d["error"]) for d in detail[0]] == [("deadline", why)]
    assert session.fetchone("select count(*) from paper_trades") == (0,)
    assert session.fetchone("select count(*) from strategy_logs") == (0,)
    assert last_run(session, "nft") is None


def test_a_minute_slightly_ahead_is_waited_for_and_one_too_far_ahead_is_refused_with_a_record(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    caplog.set_level(logging.INFO)
    slept: list[float] = []
    ahead = engine.tick(
        session, T, deps=engine.Deps(clock=Clock(T - timedelta(seconds=3.5)), sleep=slept.append)
    )
    assert (ahead.status, ahead.orders, slept) == ("ok", 3, [3.5])
    # Exactly CLOCK_SKEW (5 s) ahead is still waited for; on the minute itself nothing waits.
    edge = engine.tick(
        session, T, deps=engine.Deps(clock=Clock(T - timedelta(seconds=5)), sleep=slept.append)
    )
    on_time = engine.tick(session, T, deps=engine.Deps(clock=Clock(T), sleep=slept.append))
    assert (edge.status, on_time.status, slept) == ("ok", "ok", [3.5, 5.0])
    waits = [getattr(r, "fields", None) for r in caplog.records if r.getMessage() == "waiting for the minute"]
    assert waits == [{"minute": T.isoformat(), "seconds": 3.5}, {"minute": T.isoformat(), "seconds": 5.0}]
    with pytest.raises(MinuteRefused, match=r"6\.0s ahead of the host clock"):
        engine.tick(session, T, deps=engine.Deps(clock=Clock(T - timedelta(seconds=6)), sleep=slept.append))
    assert slept == [3.5, 5.0]
    rows = session.fetchall("select status, detail->>'reason' from engine_runs order by started_at")
    assert [r[0] for r in rows] == ["ok", "ok", "ok", "refused"] and "6.0s ahead" in rows[3][1]


def test_a_refused_minute_leaves_a_row_of_no_duration_and_a_warning_that_names_it(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    seed(session, config={"symbols": list(SYMS)})
    with pytest.raises(MinuteRefused) as refused:
        engine.tick(session, T, deps=engine.Deps(clock=Clock(T - timedelta(seconds=6)), sleep=lambda _: None))
    row = session.fetchone(
        "select id, status, duration_ms, detail->>'reason', minute, strategies, decisions, orders, blocked,"
        " failed from engine_runs"
    )  # nothing ran: every count is 0
    assert row is not None and row[1:] == ("refused", 0.0, str(refused.value), T, 0, 0, 0, 0, 0)
    ticks = [r for r in caplog.records if r.getMessage() == "tick"]
    assert [r.levelno for r in ticks] == [logging.WARNING]
    assert ticks[0].fields == {  # type: ignore[attr-defined]
        "run_id": str(row[0]),
        "minute": T.isoformat(),
        "outcome": "refused",
        "error": str(refused.value),
    }


# ---- 4. the switch and the limits are read under the claim ---------------------------------------


class ChangesB(SimulatedBroker):
    """While strategy a's first order is being sent, someone changes strategy b (another connection)."""

    db_url: str = ""
    change: str = ""
    done = False

    def submit(self, intent: OrderIntent) -> Any:
        if not ChangesB.done:
            ChangesB.done = True
            with connect(self.db_url) as other:
                other.execute(self.change)
        return super().submit(intent)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("update strategy_definitions set is_active = false where name = 'b'", "strategy_inactive"),
        (
            "update strategy_limits set max_notional_per_trade = 1"
            " where strategy_id = (select id from strategy_definitions where name = 'b')",
            "max_notional_per_trade",
        ),
    ],
    ids=["kill-switch", "limit-lowered"],
)
def test_a_change_made_while_an_earlier_strategy_sends_takes_effect_for_the_next(
    db_url: str, session: Session, change: str, code: str
) -> None:
    for name in ("a", "b"):
        seed(session, name=name, account=name, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    ChangesB.db_url, ChangesB.change, ChangesB.done = db_url, change, False

    def build(acct: Account, pos: list[Position], minute: datetime, slip: float) -> SimulatedBroker:
        return ChangesB(acct.cash, pos, slip, now=minute)

    result = engine.tick(session, T, deps=engine.Deps(simulated_broker=build))
    assert ChangesB.done
    assert [(r.orders, r.blocked) for r in result.strategies] == [(3, 0), (0, 3)]
    assert logs_of(session, "a") == [(s, "ordered", None) for s in SYMS]
    assert logs_of(session, "b") == [(s, "blocked", code) for s in SYMS]


# ---- 5. strategies sharing an account are serialised; a frozen worker makes others busy ----------


def test_a_worker_holding_a_new_accounts_lock_makes_the_others_busy_then_they_run(
    db_url: str, session: Session
) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    # at a tenth of a cent a share an order costs less than $1: refused for having nothing at all
    session.execute(
        "update market_data_1m set open = open / 100000, high = high / 100000,"
        " low = low / 100000, close = close / 100000"
    )
    session.execute("delete from broker_balances")  # a new account: no balance row yet
    account_id = session.fetchone("select id from broker_accounts")[0]  # type: ignore[index]
    quick = engine.Deps(policy=TickPolicy(lock_timeout_seconds=0.1))
    with connect(db_url) as frozen, frozen.transaction():
        assert acct_store.lock_account(frozen, account_id) is None
        busy = engine.tick(session, T, deps=quick)
        assert busy.strategies[0].outcome is StrategyOutcome.BUSY
        assert "busy" in (busy.strategies[0].error or "")
        with pytest.raises(Busy), session.transaction(lock_timeout=0.05):
            acct_store.lock_account(session, account_id)
    assert session.fetchone("select count(*) from strategy_logs") == (0,)
    after = engine.tick(session, T, deps=quick)
    assert after.strategies[0].outcome is StrategyOutcome.PROCESSED


def test_a_frozen_worker_is_ended_by_the_idle_timeout_and_the_waiting_strategy_runs(
    db_url: str, session: Session
) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    account_id = session.fetchone("select id from broker_accounts")[0]  # type: ignore[index]
    patient = engine.Deps(policy=TickPolicy(lock_timeout_seconds=30))
    with (  # noqa: PT012
        connect(db_url) as frozen,
        pytest.raises(DatabaseUnavailable),
        frozen.transaction(idle_timeout=0.2),
    ):
        acct_store.lock_account(frozen, account_id)
        waited = engine.tick(session, T, deps=patient)  # blocks until the server ends `frozen`
        assert waited.strategies[0].outcome is StrategyOutcome.PROCESSED
        frozen.execute("select 1")
    assert session.fetchone("select count(*) from paper_trades") == (3,)


def test_a_live_account_left_from_before_the_paper_only_rule_refuses_the_whole_tick(
    empty_db_url: str,
) -> None:
    """The paper-only CHECK is added NOT VALID (an existing database keeps its rows), so a live
    account row can outlive the migration: a strategy on it refuses the whole tick with one line
    naming the account, before anything is written; the strategies on paper accounts do not run
    either (a tick that may touch a live account is no tick)."""
    with connect(empty_db_url) as s:
        s.execute(
            "create table public.broker_accounts (id uuid primary key default gen_random_uuid(),"
            " name text unique, broker text, is_paper boolean not null default true);"
            "insert into public.broker_accounts (name, broker, is_paper) values ('live-1', 'simulated', false)"
        )
        migrate(s)
        seed(s, name="paper", config={"symbols": list(SYMS)})
        seed(s, name="on-live", config={"symbols": list(SYMS)}, account="tmp")
        s.execute(
            "update strategy_definitions set account_id = (select id from broker_accounts where name = 'live-1')"
            " where name = 'on-live'"
        )
        entry_setup(s, SYMS, T)
        with pytest.raises(LiveTradingRefused) as refused:
            engine.tick(s, T, deps=engine.Deps(clock=Clock(T)))
        assert str(refused.value) == "account 'live-1' is not a paper account"
        assert s.fetchall(
            "select count(*) from engine_runs union all select count(*) from strategy_logs"
        ) == [
            (0,),
            (0,),
        ]


def test_a_deadline_passing_while_deciding_sends_and_writes_nothing(
    session: Session, fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline is checked once the account is read (`engine._stage`) and again as the
    orders go out (`execution.launch`): passed in between (here while the strategy decides), no
    intent is written and no POST made; the strategy's outcome is `deadline`, each symbol is
    logged blocked with risk code `deadline`, and the minute is done (docs/operations.md,
    `deadline`: the next minute decides again)."""
    seed(session, account=ACCOUNT, broker="alpaca", config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    clock = Clock(T + timedelta(seconds=1))
    decide = execution.decide  # type: ignore[attr-defined]  # the name trade() calls

    def slow_decide(*args: Any, **kwargs: Any) -> Any:
        clock.now = T + timedelta(seconds=30)  # past the 20 s deadline
        return decide(*args, **kwargs)

    monkeypatch.setattr(execution, "decide", slow_decide)
    result = engine.tick(session, T, deps=on_alpaca(fake, clock, deadline_seconds=20))
    assert [(r.outcome, r.orders) for r in result.strategies] == [(StrategyOutcome.DEADLINE, 0)]
    assert fake.requests[POST] == 0
    assert session.fetchall("select count(*) from paper_trades") == [(0,)]
    assert logs_of(session, "nft") == [(sym, "blocked", "deadline") for sym in sorted(SYMS)]
    assert last_run(session, "nft") == T


def test_a_simulated_account_whose_balance_row_is_gone_trades_as_an_empty_one(session: Session) -> None:
    """No broker_balances row (deleted by hand): the account is read as holding nothing (no cash,
    no buying power, no equity); every entry is blocked by buying power and the mirror written
    back says so."""
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    # at a tenth of a cent a share an order costs less than $1: refused for having nothing at all
    session.execute(
        "update market_data_1m set open = open / 100000, high = high / 100000,"
        " low = low / 100000, close = close / 100000"
    )
    session.execute("delete from broker_balances")
    result = engine.tick(session, T, deps=engine.Deps(clock=Clock(T)))
    assert [(r.outcome, r.orders) for r in result.strategies] == [(StrategyOutcome.PROCESSED, 0)]
    assert logs_of(session, "nft") == [(sym, "blocked", "buying_power") for sym in sorted(SYMS)]
    assert session.fetchall(
        "select cash::float8, buying_power::float8, equity::float8 from broker_balances"
    ) == [(0.0, 0.0, 0.0)]
