"""The guards that protect money and exactly-once, each pinned by a case that fails without it.

Locks are proved with two sessions held open at once in one test (one holds the claim or the
account inside its transaction, the other ticks), not with racing processes: the outcome is
decided by the locks alone. Figures are worked out by hand from `entry_setup`: every symbol
enters long with `order_qty` 1 at the last close, 100 - 1 * 0.5 = 99.5.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from strategy_engine import engine
from strategy_engine.brokers.base import Broker
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core import calendar
from strategy_engine.core.errors import NotFound, OrderRejected
from strategy_engine.core.models import (
    Account,
    DayState,
    Limits,
    Order,
    OrderIntent,
    Position,
    RowId,
    RunResult,
    Side,
    StrategyOutcome,
)
from strategy_engine.store import Session, connect, journal
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.intents import IntentLog
from tests.conftest import seed
from tests.fake_alpaca import FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT
from tests.test_alpaca_engine import deps as alpaca_deps
from tests.test_exactly_once import SYMS, T, entry_setup

ENTRY_PRICE = 99.5  # the close of the bar at T-1 in entry_setup


def _logs(s: Session, minute: object = None) -> int:
    if minute is None:
        row = s.fetchone("select count(*) from strategy_logs")
    else:
        row = s.fetchone("select count(*) from strategy_logs where decision_minute = %s", (minute,))
    assert row is not None
    return int(row[0])


def _detail(s: Session, run: RunResult) -> list[tuple[str, str]]:
    """(strategy, outcome) of each strategy in the run's `engine_runs.detail`."""
    row = s.fetchone("select detail from engine_runs where id = %s", (run.run_id,))
    assert row is not None
    return [(x["strategy"], x["outcome"]) for x in row[0]]


def _account_id(s: Session, strategy_id: RowId) -> RowId:
    row = s.fetchone("select account_id from strategy_definitions where id = %s", (strategy_id,))
    assert row is not None
    account_id: RowId = row[0]
    return account_id


def test_a_minute_claimed_by_another_session_answers_busy_at_once_and_writes_nothing(db_url: str) -> None:
    with connect(db_url) as a, connect(db_url) as b:
        sid = seed(a, config={"symbols": list(SYMS)})
        entry_setup(a, SYMS, T)
        day = calendar.trading_date(T)
        with a.transaction():
            strat_store.ensure_day_rows(a, [sid], day)  # as the tick does before claiming
        b.execute("set lock_timeout = '2s'")  # a claim that waits instead of skipping fails, not hangs
        with a.transaction():
            assert strat_store.claim(a, sid, day) is not None  # A holds the minute...
            busy = engine.tick(b, T)  # ...while B ticks it
            assert [(r.strategy, r.outcome) for r in busy.strategies] == [("nft", StrategyOutcome.BUSY)]
            assert _detail(b, busy) == [("nft", "busy")]  # what the operator reads names it
            assert _logs(b) == 0
            assert b.fetchone("select count(*) from paper_trades") == (0,)
        done = engine.tick(b, T)  # A let go without finishing: B's turn
        assert (done.strategies[0].outcome, done.orders) == (StrategyOutcome.PROCESSED, 3)
        assert _logs(b) == 3


def test_an_earlier_minute_after_a_later_one_is_already_processed(session: Session) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    later = engine.tick(session, T + timedelta(minutes=1))
    assert later.strategies[0].outcome is StrategyOutcome.PROCESSED
    earlier = engine.tick(session, T)  # a late retry of T arrives after T+1 ran
    assert [(r.strategy, r.outcome) for r in earlier.strategies] == [
        ("nft", StrategyOutcome.ALREADY_PROCESSED)
    ]
    assert _detail(session, earlier) == [("nft", "already_processed")]
    assert _logs(session, T) == 0
    assert session.fetchone("select last_run_minute from strategy_state") == (T + timedelta(minutes=1),)


def _waiting_for_a_lock(s: Session, application_name: str) -> bool:
    row = s.fetchone(
        "select count(*) from pg_stat_activity where application_name = %s and wait_event_type = 'Lock'",
        (application_name,),
    )
    return row is not None and row[0] > 0


def test_two_strategies_on_one_account_take_turns_and_neither_spend_is_lost(db_url: str) -> None:
    spent_by_a = 1_000.0
    with connect(db_url) as a:
        seed(a, name="first", config={"symbols": list(SYMS)})
        second = seed(a, name="second", config={"symbols": list(SYMS)})
        entry_setup(a, SYMS, T)
        account_id = _account_id(a, second)
    result: list[object] = []

    def tick_second() -> None:
        with connect(db_url, application_name="second-worker") as b:
            result.append(engine.tick(b, T, only="second"))

    with connect(db_url) as a, connect(db_url) as watcher:
        with a.transaction():  # strategy "first" is mid-minute on the shared account
            held = acct_store.lock_account(a, account_id)
            assert held is not None
            acct_store.save_mirror(
                a,
                account_id,
                Account(held.cash - spent_by_a, held.buying_power - spent_by_a, held.equity),
                [],
            )
            worker = threading.Thread(target=tick_second)
            worker.start()
            while worker.is_alive() and not _waiting_for_a_lock(watcher, "second-worker"):
                worker.join(0.01)
            assert worker.is_alive(), "the second strategy did not wait for the account"
        worker.join(60)
    run = result[0]
    assert isinstance(run, RunResult)
    assert (run.strategies[0].outcome, run.orders) == (StrategyOutcome.PROCESSED, 3)
    with connect(db_url) as s:
        cash = s.fetchone("select cash::float8 from broker_balances where account_id = %s", (account_id,))
    assert cash == (100_000.0 - spent_by_a - 3 * ENTRY_PRICE,)


def test_the_account_lock_answers_what_the_holder_committed_when_it_is_granted(db_url: str) -> None:
    """`lock_account_later` hands a strategy-minute the account as the tables hold it: cash,
    buying power and equity each in its place, the positions, the stamp `save_mirror` answered,
    whether intents exist. A session that waited for the lock sees the holder's commit (the
    balance, the emptied positions, the intent written meanwhile), not the rows from before."""
    cash, power, equity = 1_000.0, 2_000.0, 3_000.0  # three different figures: none stands for another
    with connect(db_url) as a:
        account_id = acct_store.ensure_account(a, "shared", "simulated")
        held = [Position("SPY", 4.0, 99.5)]
        first = acct_store.save_mirror(a, account_id, Account(cash, power, equity), held)()
        stored = a.fetchone("select updated_at from broker_balances where account_id = %s", (account_id,))
        assert stored == (first,)
        assert acct_store.lock_account_later(a, account_id)() == acct_store.Locked(
            Account(cash, power, equity), held, first, False
        )
    seen: list[acct_store.Locked] = []

    def wait_for_the_lock() -> None:
        with connect(db_url, application_name="lock-waiter") as b, b.transaction():
            seen.append(acct_store.lock_account_later(b, account_id)())

    with connect(db_url) as a, connect(db_url) as watcher:
        with a.transaction():  # the holder spends 400 of it, sells the SPY and logs an intent
            assert acct_store.lock_account(a, account_id) == Account(cash, power, equity)
            waiter = threading.Thread(target=wait_for_the_lock)
            waiter.start()
            while waiter.is_alive() and not _waiting_for_a_lock(watcher, "lock-waiter"):
                waiter.join(0.01)
            assert waiter.is_alive(), "the second session did not wait for the account"
            second = acct_store.save_mirror(a, account_id, Account(600.0, 1_600.0, 2_999.0), [])()
            log = IntentLog(a)
            try:
                intent = OrderIntent("DIA", Side.BUY, 1.0, 100.0, "waited-for-1")
                assert log.write(None, account_id, "manual", T, [intent]) == {"waited-for-1"}
            finally:
                log.close()
        waiter.join(60)
        assert second != first
        assert seen == [acct_store.Locked(Account(600.0, 1_600.0, 2_999.0), [], second, True)]
        gone = acct_store.ensure_account(a, "closed", "simulated")
        a.execute("delete from broker_accounts where id = %s", (gone,))
        with pytest.raises(NotFound, match=f"^account {gone} no longer exists$"):
            acct_store.lock_account_later(a, gone)()


def test_a_sell_on_a_simulated_account_pays_for_a_later_symbols_buy_in_the_same_minute(
    session: Session,
) -> None:
    """The simulated broker fills at once, so an exit's proceeds are buying power for the next
    symbol of the same minute (as in the backfill); $50 alone cannot buy one SPY at 99.5."""
    seed(session, config={"symbols": ["DIA", "SPY"]}, cash=50.0)
    _spy_rising_dia_falling(session)
    found = acct_store.find_account(session, "sim")
    assert found is not None
    acct_store.save_mirror(session, found[0].id, Account(50.0, 50.0, 1_050.0), [Position("DIA", 10.0, 100.0)])
    result = engine.tick(session, T)
    assert result.orders == 2
    rows = session.fetchall("select symbol, reason, outcome from strategy_logs order by symbol")
    assert rows == [("DIA", "exit_long", "ordered"), ("SPY", "entry_long", "ordered")]
    assert session.fetchone("select cash::float8 from broker_balances") == (50.0 + 10 * 100.5 - ENTRY_PRICE,)


def _spy_rising_dia_falling(s: Session) -> None:
    """SPY wants to enter long at T (`entry_setup`); DIA's closes fall from 112.5 at T-25 to
    100.5 at T-1, under their SMA: a DIA long exits."""
    entry_setup(s, ("SPY",), T)
    s.execute(
        "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
        " select 'DIA', %(t)s - make_interval(mins => k), 100, 100, 100, 100 + k * 0.5, 1000"
        " from generate_series(1, 25) k",
        {"t": T},
    )


def test_a_sell_on_alpaca_does_not_pay_for_a_later_symbols_buy_in_the_same_minute(session: Session) -> None:
    """The Alpaca twin of the test above: Alpaca gives a sell's proceeds back as buying power only
    once it fills, so the $50 a cash account shows cannot buy one SPY at 99.5 in the minute the
    DIA exit is sent: the buy is blocked (`buying_power`), only the sell reaches the broker."""
    with FakeAlpaca(cash=50, multiplier=1) as fake:
        fake.positions["DIA"] = (Decimal(10), Decimal(100))
        fake.prices["DIA"] = Decimal("100.5")
        assert fake.buying_power() == Decimal(50)  # a cash account: the cash, the long not counted
        seed(session, account=ACCOUNT, broker="alpaca", config={"symbols": ["DIA", "SPY"]})
        _spy_rising_dia_falling(session)
        result = engine.tick(session, T, deps=alpaca_deps(fake))
        assert result.orders == 1
        rows = session.fetchall(
            "select symbol, reason, outcome, risk_code from strategy_logs order by symbol"
        )
        assert rows == [
            ("DIA", "exit_long", "ordered", None),
            ("SPY", "entry_long", "blocked", "buying_power"),
        ]
        assert [(o["symbol"], o["side"], o["qty"]) for o in fake.orders.values()] == [("DIA", "sell", "10")]


def test_cool_down_counts_only_orders_the_broker_took(session: Session) -> None:
    sid = seed(session, config={"symbols": ["AAA", "BBB", "CCC", "DDD", "EEE"]})
    account_id = _account_id(session, sid)
    minute = T - timedelta(minutes=3)
    for symbol, status in [
        ("AAA", "rejected"),
        ("BBB", "failed"),
        ("CCC", "filled"),
        ("DDD", "accepted"),
        ("EEE", None),
    ]:
        session.execute(
            "insert into paper_trades (strategy_id, account_id, symbol, side, qty, client_order_id,"
            " decision_minute, status, source) values (%s, %s, %s, 'buy', 1, %s, %s, %s, 'strategy')",
            (sid, account_id, symbol, f"cid-{symbol}", minute, status),
        )
    got = journal.last_trades(session, sid, ["AAA", "BBB", "CCC", "DDD", "EEE"], T)
    assert got == {"CCC": minute, "DDD": minute, "EEE": minute}


def test_a_rejected_entry_does_not_start_the_cool_down(session: Session) -> None:
    seed(session, config={"symbols": ["SPY"]}, limits=Limits(cool_down_minutes=10))
    entry_setup(session, ("SPY",), T)
    first = engine.tick(session, T, deps=engine.Deps(simulated_broker=_refusing))
    assert (first.strategies[0].failed, first.orders) == (1, 0)
    retry = engine.tick(session, T + timedelta(minutes=1))
    assert retry.orders == 1  # within 10 minutes of the refused order, and not blocked by it
    rows = session.fetchall("select decision_minute, status from paper_trades order by decision_minute")
    assert rows == [(T, "rejected"), (T + timedelta(minutes=1), "filled")]


def test_the_cool_down_blocks_only_a_symbol_this_strategy_traded_within_it(session: Session) -> None:
    """Cool-down 10 minutes, every symbol wanting to enter at T: this strategy bought SPY at T-3
    (blocked: 3 minutes observed) and IWM at T-10 (the limit itself: enters); another strategy
    on the same account bought QQQ at T-3 (not this strategy's trade: enters)."""
    sid = seed(session, config={"symbols": list(SYMS)}, limits=Limits(cool_down_minutes=10))
    other = seed(session, name="other", config={"symbols": ["QQQ"]})
    entry_setup(session, SYMS, T)
    account_id = _account_id(session, sid)
    for strategy, symbol, ago in [(sid, "SPY", 3), (sid, "IWM", 10), (other, "QQQ", 3)]:
        session.execute(
            "insert into paper_trades (strategy_id, account_id, symbol, side, qty, client_order_id,"
            " decision_minute, status, source) values (%s, %s, %s, 'buy', 1, %s, %s, 'filled', 'strategy')",
            (strategy, account_id, symbol, f"cid-{symbol}", T - timedelta(minutes=ago)),
        )
    result = engine.tick(session, T, only="nft")
    assert result.orders == 2
    rows = session.fetchall(
        "select symbol, outcome, risk_code, signal_payload from strategy_logs order by symbol"
    )
    assert [r[:3] for r in rows] == [
        ("IWM", "ordered", None),
        ("QQQ", "ordered", None),
        ("SPY", "blocked", "cool_down"),
    ]
    cool = [c for c in rows[2][3]["risk"]["checks"] if c["code"] == "cool_down"]
    assert cool == [{"code": "cool_down", "observed": 3.0, "limit": 10.0, "passed": False}]


class _Refusing(SimulatedBroker):
    def submit(self, intent: OrderIntent) -> Order:
        raise OrderRejected(40310000, "insufficient buying power")


def _refusing(acct: Account, positions: list[Position], minute: datetime, slip: float) -> Broker:
    return _Refusing(acct.cash, positions, slip, now=minute)


def test_last_trade_at_moves_only_when_the_minute_traded(session: Session) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    assert engine.tick(session, T).orders == 3
    held = engine.tick(session, T + timedelta(minutes=1))  # long everywhere now: hold
    assert (held.strategies[0].outcome, held.orders) == (StrategyOutcome.PROCESSED, 0)
    assert session.fetchone("select last_trade_at, last_run_minute from strategy_state") == (
        T,
        T + timedelta(minutes=1),
    )


def test_the_journal_reads_an_order_back_whole_and_a_void_one_not_at_all(session: Session) -> None:
    """`find_order` (the manual trade's exactly-once lookup) returns every field as recorded."""
    account = acct_store.ensure_account(session, "sim", "simulated")
    at = datetime(2025, 6, 13, 14, 1, tzinfo=T.tzinfo)
    placed = Order("se-find-1", "broker-77", "SPY", Side.SELL, 3.0, "partially_filled", 2.0, 99.25, at)
    void = Order("se-find-2", "", "QQQ", Side.BUY, 1.0, "void", 0.0, None, None)
    with session.transaction():
        journal.record_orders(session, None, account, "manual", None, [(placed, None), (void, None)])
    assert journal.find_order(session, "se-find-1") == placed
    assert journal.find_order(session, "se-find-2") is None  # void: never reached the broker
    assert journal.find_order(session, "se-absent") is None


def test_the_claim_reads_the_days_counters_switch_and_limits_as_committed(session: Session) -> None:
    """What `claim` hands the risk gate: 2 trades and 199.0 spent as saved, and all six limits,
    each in its own column (distinct values: none may be read from its neighbour's, or dropped);
    `load_all` (the backfill's and the CLI's limits) reads the same six. A strategy deleted
    under the invocation has nothing left to claim, so it never trades."""
    limits = Limits(
        max_daily_trades=3,
        max_position_size=7,
        max_notional_per_trade=450,
        max_notional_per_day=1200,
        max_open_positions=2,
        cool_down_minutes=15,
    )
    sid = seed(session, limits=limits)
    assert [r.limits for r in strat_store.load_all(session)] == [limits]
    day = T.date()
    with session.transaction():
        strat_store.ensure_day_rows(session, [sid], day)
    with session.transaction():
        fresh = strat_store.claim(session, sid, day)
        assert fresh == strat_store.Claim(DayState(day, 0, 0.0), None, True, limits)
        strat_store.save_state(session, sid, DayState(day, 2, 199.0), T, T)
    with session.transaction():
        saved = strat_store.claim(session, sid, day)
        assert saved == strat_store.Claim(DayState(day, 2, 199.0), T, True, limits)
    with session.transaction():
        session.execute("delete from public.strategy_limits where strategy_id = %s", (sid,))
        session.execute("delete from public.strategy_definitions where id = %s", (sid,))
    with session.transaction():
        gone = strat_store.claim(session, sid, day)
    assert gone is None  # the day row went with the definition (on delete cascade): nothing to claim
