"""Order safety after the review of issue 12: no order starts after the deadline, a worker frozen
between its intent and its POST never doubles a position, a `void` row the broker holds is
recorded, a manual re-run never doubles an order, a manual order can be retried after an outage,
and Alpaca's buying power is not reduced twice. Real Postgres, real alpaca-py, the loopback Alpaca.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import SecretStr

from strategy_engine import engine, execution
from strategy_engine import manual_trade as mt
from strategy_engine.brokers.alpaca import AlpacaPaperBroker
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core import risk
from strategy_engine.core.errors import BrokerUnavailable, InputError, NotSent
from strategy_engine.core.models import DayState, Limits, Order, OrderIntent, Side, StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import Session, connect
from strategy_engine.store.intents import IntentLog
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT, POST, deps
from tests.test_exactly_once import SYMS, T, entry_setup
from tests.test_reconcile import LOOKUP, T1, T2, logs, setup
from tests.test_tick_guards import Clock, slow_deps


def _age_rows(s: Session, by: timedelta) -> None:
    """As if `by` had passed since every journal row was last written (the database clock)."""
    s.execute("update paper_trades set updated_at = updated_at - %s", (by,))


# ---- 1. the deadline is checked before each order, not once before the first ------------------


def test_no_order_starts_after_the_deadline_and_the_unsent_are_logged_as_such(session: Session) -> None:
    seed(session, config={"symbols": list(SYMS)})
    entry_setup(session, SYMS, T)
    clock = Clock(T + timedelta(seconds=1))
    r = engine.tick(session, T, deps=slow_deps(clock, 25.0))  # each order takes 25 s of the clock
    # orders start at +1 s and +26 s; the third would start at +51 s, past the 45 s deadline (+46 s)
    assert session.fetchone("select count(*) from paper_trades") == (2,)
    assert [(x.outcome, x.orders, x.blocked) for x in r.strategies] == [(StrategyOutcome.DEADLINE, 2, 1)]
    assert r.status == "deadline"
    got = session.fetchall(
        "select symbol, outcome, risk_code, signal_payload->>'error' from strategy_logs order by symbol"
    )
    assert got == [
        ("IWM", "ordered", None, None),
        ("QQQ", "ordered", None, None),
        ("SPY", "blocked", "deadline", "past the invocation's deadline: not sent"),  # what a person reads
    ]
    assert session.fetchone("select status from engine_runs") == ("deadline",)
    retry = engine.tick(session, T, deps=slow_deps(clock, 0.0))  # what was done stays done
    assert retry.strategies[0].outcome is StrategyOutcome.ALREADY_PROCESSED


def test_launch_on_the_simulated_broker_checks_the_deadline_before_each_order(session: Session) -> None:
    """`execution.launch`'s simulated path (the manual trade's; the tick's `trade` checks on its
    own): the deadline passing after the first order leaves the second unsent and unfilled."""
    broker = SimulatedBroker(10_000.0, [], 0.0, now=T)
    checks = iter([False, True])
    run = execution.Invocation(IntentLog(session), past_deadline=lambda: next(checks))
    first, second = OrderIntent("IWM", Side.BUY, 1, 100.0, "c1"), OrderIntent("SPY", Side.BUY, 2, 50.0, "c2")
    filled, unsent = execution.launch(broker, run, None, 1, T, [first, second])()
    assert isinstance(filled, Order) and (filled.client_order_id, filled.status) == ("c1", "filled")
    assert isinstance(unsent, NotSent) and (unsent.code, str(unsent)) == ("deadline", execution.NOT_SENT_WHY)
    assert ([p.symbol for p in broker.positions()], broker.cash) == (["IWM"], 10_000.0 - 100.0)


# ---- 2. a worker frozen between its intent and its POST ----------------------------------------


class FreezesBeforePost(AlpacaPaperBroker):
    """Frozen (GC pause, SIGSTOP, VM steal) after the intent committed, before the POST."""

    gate: threading.Event
    freeze_seconds: float = 30.0

    def submit(self, intent: OrderIntent) -> Order:
        self.gate.wait(self.freeze_seconds)
        return super().submit(intent)


def _frozen(fake: FakeAlpaca, gate: threading.Event, seconds: float) -> Any:
    def build(_a: Any) -> AlpacaPaperBroker:
        b = FreezesBeforePost(
            SecretStr(KEY), SecretStr(SECRET), fake.url, timeout_seconds=5, retry_budget_seconds=20
        )
        b.gate, b.freeze_seconds = gate, seconds
        return b

    return build


def start_frozen_worker(
    db_url: str, fake: FakeAlpaca, gate: threading.Event, only: str | None = None
) -> tuple[threading.Thread, list[Any]]:
    """A worker ticking T whose broker freezes between its committed intent and its POST until
    `gate` is set (30 s at most). Returns once the server's idle timeout (1 s) has ended its
    transaction, freeing the account's lock; its outcome (or error) lands in the list."""
    out: list[Any] = []

    def worker() -> None:
        try:
            with connect(db_url) as s:
                d = engine.Deps(
                    alpaca_broker=_frozen(fake, gate, 30.0),
                    policy=TickPolicy(max_lag_seconds=0, idle_timeout_seconds=1.0),
                )
                out.append(engine.tick(s, T, only=only, deps=d))
        except Exception as exc:  # its transaction was ended by the server: expected
            out.append(exc)

    th = threading.Thread(target=worker)
    th.start()
    time.sleep(3.0)  # the server has ended the frozen transaction (idle 1 s)
    return th, out


def spy_and_iwm(s: Session) -> None:
    """Strategy a (SPY) and b (IWM) on the Alpaca account, each wanting to enter long at T and T+1."""
    seed(s, name="a", account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
    seed(s, name="b", account=ACCOUNT, broker="alpaca", config={"symbols": ["IWM"]})
    entry_setup(s, ("SPY", "IWM"), T)
    s.execute(
        "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
        " select sym, %s + make_interval(mins => k), 100, 100, 100, 100 + k, 1000"
        " from unnest(%s::text[]) sym, generate_series(0, 1) k",
        (T, ["SPY", "IWM"]),
    )


def test_a_worker_that_wakes_past_the_deadline_does_not_post(session: Session, fake: FakeAlpaca) -> None:
    setup(session)
    fake.set_policy("instant")
    policy = TickPolicy(max_lag_seconds=0, deadline_seconds=2.5)  # the real wall clock
    d = engine.Deps(alpaca_broker=_frozen(fake, threading.Event(), 3.5), policy=policy)
    r = engine.tick(session, T, deps=d)  # frozen 3.5 s between the intent and the POST
    assert (fake.requests[POST], fake.orders_accepted) == (0, 0)
    assert r.status == "deadline"
    assert logs(session) == [(T, "SPY", "entry_long", "blocked", "deadline")]
    assert session.fetchall("select status from paper_trades") == [("void",)]  # never at the broker


def test_a_frozen_workers_young_intent_is_working_so_the_next_minute_does_not_double(
    db_url: str, fake: FakeAlpaca
) -> None:
    with connect(db_url) as s:
        setup(s, limits=Limits(max_position_size=1))
    fake.set_policy("instant")
    gate = threading.Event()
    th, out = start_frozen_worker(db_url, fake, gate)
    with connect(db_url) as s:
        assert s.fetchone("select status from paper_trades") == ("intent",)
        nxt = engine.tick(s, T1, deps=deps(fake))
        assert nxt.orders == 0
        assert logs(s) == [(T1, "SPY", "order_working", "held", None)]  # the young intent is working
        assert s.fetchone("select status from paper_trades") == ("intent",)  # not voided
    gate.set()
    th.join(60)
    assert out and not th.is_alive()
    assert fake.orders_accepted == 1  # the frozen worker's POST landed (before its deadline)
    with connect(db_url) as s:
        engine.tick(s, T2, deps=deps(fake))
        rows = s.fetchall("select client_order_id, status, filled_qty::float8 from paper_trades")
        (order,) = fake.orders.values()
        assert rows == [(order["client_order_id"], "filled", 1.0)]  # reconciled
    assert fake.positions["SPY"][0] == 1


class LandsBeforeLookup(AlpacaPaperBroker):
    """Our worker's broker: its first lookup by client id (of the frozen worker's young intent,
    after the account, positions and order lists were read) waits until the frozen worker's
    POST has landed: the order filled after the reads, before the lookup."""

    gate: threading.Event
    fake: FakeAlpaca

    def get_by_client_id(self, client_order_id: str) -> Order | None:
        self.gate.set()
        for _ in range(200):
            if self.fake.orders_accepted:
                break
            time.sleep(0.05)
        return super().get_by_client_id(client_order_id)


def test_a_young_intent_that_landed_and_filled_after_the_reads_counts_in_full(
    db_url: str, fake: FakeAlpaca
) -> None:
    """The frozen worker's SPY buy (max_position_size 1) lands and fills between the next
    worker's reads (no SPY position, no open SPY order, SPY not in the recent list) and its
    lookup of the young intent. What it filled is in none of the reads: the order counts as
    working for its whole quantity, so the next minute does not buy a second share."""
    with connect(db_url) as s:
        setup(s, limits=Limits(max_position_size=1))
    fake.set_policy("instant")
    gate = threading.Event()
    th, _ = start_frozen_worker(db_url, fake, gate)

    def ours(_a: Any) -> AlpacaPaperBroker:
        b = LandsBeforeLookup(
            SecretStr(KEY), SecretStr(SECRET), fake.url, timeout_seconds=5, retry_budget_seconds=20
        )
        b.gate, b.fake = gate, fake
        return b

    with connect(db_url) as s:
        nxt = engine.tick(s, T1, deps=engine.Deps(alpaca_broker=ours, policy=TickPolicy(max_lag_seconds=0)))
        th.join(60)
        assert fake.orders_accepted == 1, "no second SPY order"
        assert nxt.orders == 0
        assert logs(s)[-1][1:4] == ("SPY", "order_working", "held")
    assert fake.positions["SPY"][0] == 1


def test_a_young_intent_holds_back_the_buying_power_the_broker_has_not_netted_yet(db_url: str) -> None:
    """A frozen worker committed strategy a's SPY buy (about $100) and has not posted it: Alpaca
    still shows all $150 of buying power (a cash account). Strategy b on the same account then
    wants IWM (about $100): only $50 is left once the young intent is held back, so b's buy is
    blocked (`buying_power`) instead of spending money the SPY order will need."""
    with FakeAlpaca(cash=150, multiplier=1) as fake:
        with connect(db_url) as s:
            spy_and_iwm(s)
        gate = threading.Event()
        th, _ = start_frozen_worker(db_url, fake, gate, only="a")
        try:
            with connect(db_url) as s:
                assert s.fetchall("select symbol, status from paper_trades") == [("SPY", "intent")]
                engine.tick(s, T1, only="b", deps=deps(fake))
                got = s.fetchone("select symbol, outcome, risk_code from strategy_logs where symbol = 'IWM'")
                assert got == ("IWM", "blocked", "buying_power")
        finally:
            gate.set()
            th.join(60)
        assert fake.requests[POST] == 1  # the frozen worker's SPY only


# ---- 3. a void row whose order is at the broker is recorded --------------------------------------


def test_a_void_row_with_an_order_at_the_broker_is_overwritten_and_logged_reconciled(
    session: Session, fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    setup(session)
    fake.set_policy("instant")
    acct = session.fetchone("select id from broker_accounts")[0]  # type: ignore[index]
    sid = session.fetchone("select id from strategy_definitions")[0]  # type: ignore[index]
    cid = "se-0000000000000000000late"
    session.execute(
        "insert into paper_trades (strategy_id, account_id, source, decision_minute, client_order_id,"
        " symbol, side, qty, status) values (%s, %s, 'strategy', %s, %s, 'IWM', 'buy', 2, 'void')",
        (sid, acct, T - timedelta(minutes=5), cid),
    )
    fake.place({"symbol": "IWM", "side": "buy", "qty": "2", "client_order_id": cid})
    with caplog.at_level("WARNING"):
        engine.tick(session, T, deps=deps(fake))
    row = session.fetchone("select status, filled_qty::float8, error from paper_trades where symbol = 'IWM'")
    assert row == ("filled", 2.0, "reconciled: the broker holds it, the journal had it void")
    said = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "order reconciled"]
    assert said == [{"client_order_id": cid, "status": "filled", "was": "void"}]


def test_an_order_from_days_before_with_no_row_is_adopted(session: Session, fake: FakeAlpaca) -> None:
    setup(session)
    fake.set_policy("manual")
    placed = fake.place(
        {"symbol": "IWM", "side": "buy", "qty": "2", "client_order_id": "se-m-friday0000000000000"}
    )
    # submitted three days before T (a Friday's last minute, seen first on Monday)
    fake.orders[placed[1]["id"]]["submitted_at"] = (T - timedelta(days=3)).isoformat()
    engine.tick(session, T, deps=deps(fake))
    assert session.fetchone("select status from paper_trades where symbol = 'IWM'") == ("accepted",)


def test_an_order_the_broker_no_longer_knows_is_marked_and_no_longer_asked_about(
    session: Session, fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    setup(session)
    session.execute("update strategy_definitions set is_active = false")  # no orders of its own
    acct = session.fetchone("select id from broker_accounts")[0]  # type: ignore[index]
    for cid in ("se-gone000000000000000000", "se-recent0000000000000000"):
        session.execute(
            "insert into paper_trades (account_id, source, decision_minute, client_order_id, symbol,"
            " side, qty, status) values (%s, 'strategy', %s, %s, 'IWM', 'buy', 1, 'accepted')",
            (acct, T - timedelta(minutes=5), cid),
        )
    session.execute(
        "update paper_trades set updated_at = now() - interval '2 hours' where client_order_id like 'se-gone%'"
    )
    with caplog.at_level(logging.WARNING):
        engine.tick(session, T, deps=deps(fake))
    said = [(r.name, r.getMessage(), getattr(r, "fields", None)) for r in caplog.records]
    assert said == [
        ("strategy_engine", "order unknown at the broker", {"client_order_id": "se-gone000000000000000000"}),
        (
            "strategy_engine.account_view",
            "order se-recent0000000000000000 is not at the broker: left as it is",
            None,
        ),
    ]
    assert session.fetchall(
        "select client_order_id, status from paper_trades where symbol = 'IWM' order by 1"
    ) == [
        ("se-gone000000000000000000", "unknown_at_broker"),
        ("se-recent0000000000000000", "accepted"),  # asked again next run
    ]
    asked = fake.requests[LOOKUP]
    engine.tick(session, T1, deps=deps(fake))
    assert fake.requests[LOOKUP] == asked + 1  # the recent one only


# ---- 4-5. manual re-runs --------------------------------------------------------------------------


def test_a_manual_rerun_a_minute_later_is_refused_unless_again(session: Session, fake: FakeAlpaca) -> None:
    seed(session, account=ACCOUNT, broker="alpaca")
    entry_setup(session, ("SPY",), T)
    fake.set_policy("instant")
    d = deps(fake)
    d.clock = lambda: T + timedelta(seconds=50)
    first = mt.manual_trade(session, ACCOUNT, "SPY", "buy", 2, deps=d)
    d.clock = lambda: T + timedelta(seconds=65)  # the CLI timed out; the person runs it again
    with pytest.raises(InputError) as err:
        mt.manual_trade(session, ACCOUNT, "SPY", "buy", 2, deps=d)
    assert first.client_order_id in str(err.value) and "\n" not in str(err.value)
    assert fake.orders_accepted == 1
    mt.manual_trade(session, ACCOUNT, "SPY", "buy", 2, deps=d, again=True)  # meant: a second order
    mt.manual_trade(session, ACCOUNT, "SPY", "buy", 2, deps=d, client_order_id="desk-7")  # its own key
    assert fake.orders_accepted == 3


def test_a_manual_order_retried_with_its_key_after_an_outage_goes_through(
    session: Session, fake: FakeAlpaca
) -> None:
    seed(session, account="other", broker="simulated")
    session.execute(
        "insert into broker_accounts (name, broker, is_paper) values (%s, 'alpaca', true)", (ACCOUNT,)
    )
    entry_setup(session, ("SPY",), T)
    d = deps(fake)
    d.clock = lambda: T + timedelta(seconds=10)
    fake.fail(POST, 503, times=10_000)
    with pytest.raises(BrokerUnavailable):  # the outage: exit 3
        mt.manual_trade(session, ACCOUNT, "SPY", "buy", 1, client_order_id="desk-1", deps=d)
    assert fake.orders_accepted == 0
    fake.heal()
    d.clock = lambda: T + timedelta(seconds=40)
    order = mt.manual_trade(session, ACCOUNT, "SPY", "buy", 1, client_order_id="desk-1", deps=d)
    assert order.client_order_id == "desk-1" and fake.orders_accepted == 1
    assert session.fetchall("select client_order_id, status from paper_trades") == [("desk-1", order.status)]


# ---- 6. buying power ------------------------------------------------------------------------------


def test_working_buys_are_not_subtracted_again_from_alpacas_buying_power(session: Session) -> None:
    with FakeAlpaca(multiplier=1, cash=100_000) as fake:
        setup(session, ("QQQ", "SPY"))
        fake.set_policy("manual")
        fake.place({"symbol": "QQQ", "side": "buy", "qty": "900", "client_order_id": "someone-else"})
        assert fake.buying_power() == Decimal(10_000)  # Alpaca: 100k cash less the 90k working buy
        engine.tick(session, T, deps=deps(fake))
        assert logs(session)[-1] == (T, "SPY", "entry_long", "ordered", None)  # $100 of $10k


def _ctx(release: bool) -> risk.RiskContext:
    return risk.RiskContext(
        minute=T,
        is_active=True,
        market_open=True,
        last_bar_ts=MappingProxyType({}),
        max_bar_age_seconds=120,
        day=DayState(T.date()),
        positions=MappingProxyType({"QQQ": 10.0}),
        last_trade_at=MappingProxyType({}),
        buying_power=500.0,
        sells_release_power=release,
    )


@pytest.mark.parametrize(("release", "power"), [(True, 1_500.0), (False, 500.0)], ids=["simulated", "alpaca"])
def test_an_approved_sell_releases_buying_power_only_where_it_fills_at_once(
    release: bool, power: float
) -> None:
    sell = OrderIntent("QQQ", Side.SELL, 10, 100.0, "se-x")
    assert risk.apply(_ctx(release), sell).buying_power == power


# ---- kill -9 around the POST, then the next minute first, then the retry --------------------------

KILL_AROUND_POST = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime
    from pydantic import SecretStr
    from strategy_engine import engine
    from strategy_engine.brokers.alpaca import AlpacaPaperBroker
    from strategy_engine.invocation import TickPolicy
    from strategy_engine.store import connect

    class Dies(AlpacaPaperBroker):
        def submit(self, intent):
            if MODE == "before":
                os._exit(137)
            import threading
            threading.Timer(0.5, lambda: os._exit(137)).start()
            return super().submit(intent)

    db, minute, url, key, secret, MODE = sys.argv[1:]
    broker = lambda _a: Dies(SecretStr(key), SecretStr(secret), url, timeout_seconds=5, retry_budget_seconds=6)
    with connect(db) as s:
        engine.tick(s, datetime.fromisoformat(minute),
                    deps=engine.Deps(alpaca_broker=broker, policy=TickPolicy(max_lag_seconds=0)))
    """
)


@pytest.mark.parametrize("mode", ["before", "mid"])
def test_a_kill_around_the_post_then_the_next_minute_then_the_retry_places_one_order(
    db_url: str, fake: FakeAlpaca, mode: str
) -> None:
    with connect(db_url) as s:
        setup(s, limits=Limits(max_position_size=1))
    fake.set_policy("instant")
    if mode == "mid":
        fake.slow(POST, 3.0)  # the order lands, the answer comes after the kill
    p = subprocess.run(
        [sys.executable, "-c", KILL_AROUND_POST, db_url, T.isoformat(), fake.url, KEY, SECRET, mode],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert p.returncode == 137, p.stderr
    assert fake.orders_accepted == (0 if mode == "before" else 1)
    with connect(db_url) as s:
        engine.tick(s, T1, deps=deps(fake))
        if mode == "before":
            # A dead worker and a frozen one look alike: its young intent is working, not void,
            # until no attempt of it can start any more (deadline + broker budget + margin).
            assert logs(s)[-1] == (T1, "SPY", "order_working", "held", None)
            assert fake.orders_accepted == 0
            _age_rows(s, timedelta(seconds=TickPolicy().in_flight_seconds + 1))
            engine.tick(s, T2, deps=deps(fake))
        late = engine.tick(s, T, deps=deps(fake))
        assert late.strategies[0].outcome is StrategyOutcome.ALREADY_PROCESSED
        rows = s.fetchall("select status from paper_trades order by decision_minute")
    assert fake.orders_accepted == 1
    assert sum(1 for r in rows if r[0] == "filled") == 1


def test_a_working_buy_on_a_symbol_whose_bars_stopped_still_counts_and_the_minute_runs(
    session: Session, fake: FakeAlpaca
) -> None:
    """An order placed at T is still working at T+1, when its symbol has no usable bar left (the
    feed stopped, its bars deleted): the minute still runs (the symbol is held: no bar), and
    the order counts as working, priced at nothing for the buying power (no price is known:
    `exposure.working`), never as a price of None."""
    setup(session, ("SPY", "IWM"))
    fake.set_policy("manual")  # accepted, never filled
    first = engine.tick(session, T, deps=deps(fake))
    assert (first.status, first.orders) == ("ok", 2)
    session.execute("delete from market_data_1m where symbol = 'SPY'")
    after = engine.tick(session, T1, deps=deps(fake))
    assert [(r.outcome, r.error) for r in after.strategies] == [(StrategyOutcome.PROCESSED, None)]
    held = session.fetchall(
        "select symbol, outcome, reason from strategy_logs where decision_minute = %s order by 1", (T1,)
    )
    assert [(sym, outcome) for sym, outcome, _ in held] == [("IWM", "held"), ("SPY", "held")]
    assert fake.requests[POST] == 2  # no second order on either symbol


def test_a_working_order_outside_the_strategy_on_a_split_symbol_is_priced_split_adjusted(
    session: Session, fake: FakeAlpaca
) -> None:
    """A manual buy of XLE left working on the account; XLE's last bar is yesterday's, before a
    2:1 split's ex time (midnight New York today). The strategy on SPY prices that working order
    as its own features would (`data_quality.last_close`, the split applied as of T): its minute
    runs and sends its own order (priced with no T, the split's comparison failed the minute)."""
    seed(session, account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
    entry_setup(session, ("SPY", "XLE"), T)
    fake.set_policy("manual")  # accepted, never filled
    d = deps(fake)
    d.clock = lambda: T  # the last bar (T-1) is fresh
    manual = mt.manual_trade(session, ACCOUNT, "XLE", "buy", 3, deps=d)
    assert manual.status == "accepted"
    # Then XLE's last bar is yesterday's, before the split's ex time (midnight New York today).
    session.execute("delete from market_data_1m where symbol = 'XLE'")
    session.execute(
        "insert into market_data_1m (symbol, ts, close, volume) values ('XLE', %s, 100, 1)",
        (T - timedelta(days=1),),
    )
    session.execute(
        "insert into corporate_actions (symbol, ex_date, split_ratio) values ('XLE', %s, 2)", (T.date(),)
    )
    result = engine.tick(session, T, deps=deps(fake))
    assert [(r.outcome, r.error, r.orders) for r in result.strategies] == [
        (StrategyOutcome.PROCESSED, None, 1)
    ]
    assert sorted(o["symbol"] for o in fake.orders.values()) == ["SPY", "XLE"]
