"""Attacks on the young intent counted from the reads (account_view._view, no lookup after them).

A young intent is a `paper_trades` row in status `intent`, committed less than `in_flight_seconds`
ago by a worker that has not given up: its order may land at Alpaca any moment. Here the frozen
or dead worker is its committed row (inserted as the worker's `IntentLog.write` leaves it) and
its POST is `fake.place(...)` at the chosen moment: before the reads, between two of the four
reads sent at once (`Reads.of`), or never. Real Postgres, real alpaca-py, the loopback Alpaca.
Each docstring starts HELD (the property held) or BROKE (it broke the code as it was, with the
four reads sent at once; fixed since: an account with intents reads its order lists first).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from strategy_engine import engine
from strategy_engine import manual_trade as mt
from strategy_engine.brokers.alpaca import AlpacaPaperBroker
from strategy_engine.core.errors import BrokerUnavailable, InputError
from strategy_engine.core.models import Account, Limits, Order, Position, StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import Session, connect
from tests.conftest import seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_alpaca_engine import ACCOUNT, POST, REPLAY, deps
from tests.test_exactly_once import T, entry_setup
from tests.test_order_safety import spy_and_iwm
from tests.test_reconcile import T1, T2, logs, setup

CID = "se-young00000000000000000"
WINDOW = TickPolicy().in_flight_seconds  # REPLAY's too: same deadline and broker budget


def _ids(s: Session, strategy: str | None = None, account: str = ACCOUNT) -> tuple[Any, Any]:
    acct = s.fetchone("select id from broker_accounts where name = %s", (account,))
    sid = s.fetchone("select id from strategy_definitions where name = %s", (strategy,)) if strategy else None
    assert acct is not None
    return acct[0], (sid[0] if sid else None)


def _young(
    s: Session,
    cid: str = CID,
    symbol: str = "SPY",
    side: str = "buy",
    qty: float = 1,
    *,
    strategy: str | None = "nft",
    account: str = ACCOUNT,
    error: str | None = None,
) -> None:
    """The row a worker's `IntentLog.write` commits before its POST (`error`: it gave up)."""
    acct, sid = _ids(s, strategy, account)
    source = "strategy" if strategy else "manual"
    s.execute(
        "insert into paper_trades (strategy_id, account_id, source, decision_minute, client_order_id,"
        " symbol, side, qty, decision_price, status, error, updated_at)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, 100, 'intent', %s, now())",
        (sid, acct, source, T, cid, symbol, side, qty, error),
    )


def _lands(fake: FakeAlpaca, cid: str = CID, symbol: str = "SPY", side: str = "buy", qty: int = 1) -> str:
    """The young intent's POST lands at Alpaca (fills as the fake's policy says); its order id."""
    status, body = fake.place({"symbol": symbol, "side": side, "qty": str(qty), "client_order_id": cid})
    assert status == 200, body
    return str(body["id"])


def _age(s: Session) -> None:
    """As if the young intent's window had passed (the database clock)."""
    s.execute("update paper_trades set updated_at = updated_at - %s", (timedelta(seconds=WINDOW + 1),))


def _rows(s: Session) -> list[tuple[Any, ...]]:
    return s.fetchall("select client_order_id, status from paper_trades order by decision_minute, 1")


def _held(fake: FakeAlpaca, symbol: str = "SPY") -> float:
    return float(fake.positions.get(symbol, (0, 0))[0])


# ---- a POST that lands between two of the reads sent at once ----------------------------------


class Race:
    """The young intent's POST lands once read `first` has answered and before read `then` is
    sent, in the reads under the lock (each read's second call: the first is the prefetch, which
    the account's intent makes the engine discard)."""

    def __init__(self, land: Callable[[], object], first: str, then: str) -> None:
        self.land, self.first, self.then = land, first, then
        self.calls: Counter[str] = Counter()
        self.answered = {k: threading.Event() for k in ("account", "positions", "open", "recent")}
        self.landed = False

    def read(self, name: str, fn: Callable[[], Any]) -> Any:
        self.calls[name] += 1
        under_lock = self.calls[name] == 2
        if under_lock and name == self.then:
            assert self.answered[self.first].wait(10), f"{self.first} never answered"
            self.land()
            self.landed = True
        out = fn()
        if under_lock:
            self.answered[name].set()
        return out


class RacingBroker(AlpacaPaperBroker):
    race: Race

    def account(self) -> Account:
        result: Account = self.race.read("account", super().account)
        return result

    def positions(self) -> list[Position]:
        result: list[Position] = self.race.read("positions", super().positions)
        return result

    def open_orders(self) -> list[Order]:
        result: list[Order] = self.race.read("open", super().open_orders)
        return result

    def recent_orders(self, after: datetime) -> list[Order]:
        sup = super().recent_orders
        result: list[Order] = self.race.read("recent", lambda: sup(after))
        return result


def _racing(fake: FakeAlpaca, race: Race) -> engine.Deps:
    def build(_a: Any) -> AlpacaPaperBroker:
        b = RacingBroker(
            SecretStr(KEY), SecretStr(SECRET), fake.url, timeout_seconds=5, retry_budget_seconds=20
        )
        b.race = race
        return b

    return engine.Deps(alpaca_broker=build, policy=REPLAY)


def test_filled_between_the_lists_and_the_positions_read_is_not_a_second_entry(
    session: Session, fake: FakeAlpaca
) -> None:
    """BROKE when the four reads went at once (race: after the positions read, before the recent
    list: the recent version, filled, counted nothing and the positions held nothing: a second
    share). An account with intents now reads its lists first: here the frozen worker's SPY buy
    (max_position_size 1) lands and fills after the lists (not in them) and before the
    positions are read. Not listed, it counts at its whole quantity: no second order."""
    setup(session, limits=Limits(max_position_size=1))
    _young(session)
    fake.set_policy("instant")
    race = Race(lambda: _lands(fake), first="recent", then="positions")
    engine.tick(session, T1, deps=_racing(fake, race))
    assert race.landed
    assert fake.orders_accepted == 1, "a second SPY order"
    assert _held(fake) == 1.0


def test_landed_between_the_lists_and_the_account_read_holds_back_its_buying_power(
    session: Session,
) -> None:
    """BROKE when the four reads went at once (race: after the account read, before the open
    list: listed, the order was taken as netted by a balance read before it landed). Now the
    lists come first. Cash account, $150: strategy a's young SPY buy (about $100) lands after
    the lists (not in them) and before the account read. Held back at its whole quantity,
    strategy b's IWM buy (about $100) is blocked (`buying_power`) by the engine itself."""
    with FakeAlpaca(cash=150, multiplier=1) as fake:
        spy_and_iwm(session)
        _young(session, strategy="a")
        fake.set_policy("manual")
        race = Race(lambda: _lands(fake), first="open", then="account")
        engine.tick(session, T1, only="b", deps=_racing(fake, race))
        assert race.landed
        got = session.fetchone("select outcome, risk_code from strategy_logs where symbol = 'IWM'")
        assert got == ("blocked", "buying_power")


def test_landed_between_the_open_list_and_the_account_read_counts_once_and_settles(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. The POST lands after the open list answered (not in it) and before the recent list
    and the account are read: the recent version (accepted) counts as working, so no second
    order; the strategy's reconciliation records it from the recent list in the same minute, and
    the next minute the open list holds it."""
    setup(session, limits=Limits(max_position_size=1))
    _young(session)
    fake.set_policy("manual")
    race = Race(lambda: _lands(fake), first="open", then="recent")
    engine.tick(session, T1, deps=_racing(fake, race))
    assert race.landed
    assert fake.orders_accepted == 1
    assert logs(session)[-1] == (T1, "SPY", "order_working", "held", None)
    assert _rows(session) == [(CID, "accepted")]
    fake.fill(CID)
    engine.tick(session, T2, deps=deps(fake))
    assert (fake.orders_accepted, _held(fake)) == (1, 1.0)
    assert _rows(session) == [(CID, "filled")]


# ---- landed before the reads, in each state -------------------------------------------------------


@pytest.mark.parametrize("state", ["open", "partly_filled", "filled", "held_status"])
def test_landed_before_the_reads_counts_once_and_settles(
    session: Session, fake: FakeAlpaca, state: str
) -> None:
    """HELD. The young intent's 2-share buy (max_position_size 2) landed before the reads:
    working (listed or, in a status the open list leaves out, from the recent list), partly
    filled, or filled. The next minute sends no second order, and its reconciliation records the
    broker's order on the intent's row."""
    setup(session, limits=Limits(max_position_size=2))
    _young(session, qty=2)
    fake.set_policy("instant" if state == "filled" else "manual")
    oid = _lands(fake, qty=2)
    if state == "partly_filled":
        fake.fill(CID, qty=1)
    if state == "held_status":  # Alpaca's `held` (a leg waiting): not in the open list, may fill
        fake.orders[oid]["status"] = "held"
    engine.tick(session, T1, deps=deps(fake))
    assert fake.requests[POST] == 0 and fake.orders_accepted == 1
    expected = {"open": "accepted", "partly_filled": "partially_filled", "filled": "filled"}
    assert _rows(session) == [(CID, expected.get(state, "held"))]
    if state != "filled":  # a working remainder: the symbol is held
        assert logs(session)[-1] == (T1, "SPY", "order_working", "held", None)
    engine.tick(session, T2, deps=deps(fake))
    assert fake.requests[POST] == 0 and fake.orders_accepted == 1
    assert _held(fake) == (2.0 if state == "filled" else 1.0 if state == "partly_filled" else 0.0)


def test_canceled_unfilled_before_the_reads_lets_the_strategy_enter_once(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. The young intent's order was canceled with nothing filled before the reads: nothing
    is working (the recent list says so), the row is settled `canceled`, and the strategy enters
    with one order of its own, once."""
    setup(session, limits=Limits(max_position_size=1))
    _young(session)
    fake.set_policy("manual")
    oid = _lands(fake)
    fake.orders[oid]["status"] = "canceled"
    fake.set_policy("instant")
    engine.tick(session, T1, deps=deps(fake))
    engine.tick(session, T2, deps=deps(fake))
    assert (fake.requests[POST], fake.orders_accepted, _held(fake)) == (1, 2, 1.0)
    assert _rows(session)[0] == (CID, "canceled")


@pytest.mark.parametrize("where", ["older_than_the_window", "beyond_the_500_newest"])
def test_filled_but_missing_from_the_recent_list_blocks_one_minute_only(
    session: Session, fake: FakeAlpaca, where: str
) -> None:
    """HELD. The young intent's order filled before the reads but the recent list does not show
    it (submitted before the list reaches back, or 500 newer orders since): it counts as the
    intent (a share working beside the share held: SPY held this minute, no second order), the
    strategy's reconciliation finds it by client id and settles the row `filled`, and the next
    minute SPY is no longer working."""
    setup(session, limits=Limits(max_position_size=1))
    _young(session)
    fake.set_policy("instant")
    oid = _lands(fake)
    if where == "older_than_the_window":
        fake.orders[oid]["submitted_at"] = (T1 - timedelta(days=5)).isoformat()
    else:
        fake.set_policy("manual")
        for k in range(500):
            other = _lands(fake, cid=f"desk-{k}", symbol="XYZ")
            fake.orders[other]["status"] = "canceled"
    engine.tick(session, T1, deps=deps(fake))
    assert logs(session)[-1] == (T1, "SPY", "order_working", "held", None)
    assert _rows(session) == [(CID, "filled")]
    engine.tick(session, T2, deps=deps(fake))
    assert [x for x in logs(session) if x[0] == T2 and x[4] == "order_working"] == []
    assert (fake.requests[POST], _held(fake)) == (0, 1.0)


# ---- sells, shorts, other symbols, other sources ---------------------------------------------------


@pytest.mark.parametrize("short", [False, True], ids=["exit", "short"])
def test_a_young_sell_is_working_and_blocks_a_new_order_on_its_symbol(
    session: Session, fake: FakeAlpaca, short: bool
) -> None:
    """HELD. A young SELL of SPY not landed (an exit of the share held, or a short from flat):
    SPY counts as working (-1), so the strategy, which sees itself flat (exit) or short, sends
    nothing beside it; once the window passes the row is voided and the account is free."""
    setup(session, limits=Limits(max_position_size=1))
    if not short:
        fake.positions["SPY"] = (Decimal(1), fake.prices["SPY"])  # a share held
    _young(session, side="sell")
    fake.set_policy("instant")
    engine.tick(session, T1, deps=deps(fake))
    assert fake.requests[POST] == 0
    assert [x[4] for x in logs(session) if x[0] == T1] == ["order_working"]
    assert _rows(session) == [(CID, "intent")]
    _age(session)
    engine.tick(session, T2, deps=deps(fake))
    assert _rows(session)[0] == (CID, "void")
    # held a share: it holds it (no second entry); flat: it enters once
    assert fake.requests[POST] == (0 if not short else 1)
    assert _held(fake) == 1.0


def test_a_young_buy_of_a_symbol_the_strategy_does_not_trade_is_priced_from_its_bars(db_url: str) -> None:
    """HELD. Strategy a's young QQQ buy of 10 (about $1,000; QQQ is no strategy's symbol this
    minute, priced from its last bar) holds back buying power: strategy b's SPY buy on the $1,050
    cash account is blocked (`buying_power`), then sent once the window has passed."""
    with FakeAlpaca(cash=1050, multiplier=1) as fake, connect(db_url) as s:
        setup(s)
        seed(s, name="a", account=ACCOUNT, broker="alpaca", config={"symbols": ["IWM"]})
        s.execute(
            "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
            " values ('QQQ', %s, 100, 100, 100, 100, 1000)",
            (T,),
        )
        _young(s, symbol="QQQ", qty=10, strategy="a")
        fake.set_policy("instant")
        engine.tick(s, T1, only="nft", deps=deps(fake))
        assert logs(s) == [(T1, "SPY", "entry_long", "blocked", "buying_power")]
        _age(s)
        engine.tick(s, T2, only="nft", deps=deps(fake))
        assert (fake.requests[POST], _held(fake)) == (1, 1.0)
        assert _rows(s)[0] == (CID, "intent")  # strategy a's: its own run settles it


@pytest.mark.parametrize("whose", ["manual", "another_strategy"])
def test_a_young_intent_of_another_source_blocks_until_its_window_then_trading_resumes(
    session: Session, fake: FakeAlpaca, whose: str
) -> None:
    """HELD. A manual (`se-m-`) or another strategy's young SPY buy on the account, never landed
    (its worker died before the POST): SPY is working for the strategy until the window passes,
    then it trades (one order); the manual row is voided by this strategy's reconciliation, the
    other strategy's waits for its own run."""
    setup(session, limits=Limits(max_position_size=1))
    seed(session, name="other", account=ACCOUNT, broker="alpaca", config={"symbols": ["IWM"]})
    cid = "se-m-young000000000000000000" if whose == "manual" else CID
    _young(session, cid, strategy=None if whose == "manual" else "other")
    fake.set_policy("instant")
    engine.tick(session, T1, only="nft", deps=deps(fake))
    assert logs(session) == [(T1, "SPY", "order_working", "held", None)]
    assert fake.requests[POST] == 0
    _age(session)
    engine.tick(session, T2, only="nft", deps=deps(fake))
    assert logs(session)[-1] == (T2, "SPY", "entry_long", "ordered", None)
    assert (fake.requests[POST], _held(fake)) == (1, 1.0)
    assert _rows(session)[0] == (cid, "void" if whose == "manual" else "intent")


def test_a_manual_trade_is_refused_beside_a_young_intent_on_its_symbol(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. A strategy's young SPY buy, not landed: `strategy-engine trade` of SPY is refused
    (`order_working`), nothing sent; after the window it goes through."""
    setup(session)
    _young(session)
    fake.set_policy("instant")
    d = deps(fake)
    d.clock = lambda: T1 + timedelta(seconds=10)
    with pytest.raises(InputError, match="order_working"):
        mt.manual_trade(session, ACCOUNT, "SPY", "buy", 1, deps=d)
    assert fake.requests[POST] == 0
    _age(session)
    mt.manual_trade(session, ACCOUNT, "SPY", "buy", 1, deps=d)
    assert (fake.requests[POST], _held(fake)) == (1, 1.0)


def test_a_manual_trade_sees_a_young_intent_that_filled_before_its_reads(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. Another worker's young SPY sell of 1 landed and filled before the manual trade's reads
    (SPY flat again): a manual sell of 1 without --allow-short is refused as opening a short: the
    filled sell is in the positions read and is not counted a second time as working."""
    setup(session)
    fake.positions["SPY"] = (Decimal(1), fake.prices["SPY"])  # a share held
    _young(session, side="sell")
    fake.set_policy("instant")
    _lands(fake, side="sell")
    assert _held(fake) == 0.0
    d = deps(fake)
    d.clock = lambda: T1 + timedelta(seconds=10)
    with pytest.raises(InputError, match="would open a short of 1"):
        mt.manual_trade(session, ACCOUNT, "SPY", "sell", 1, deps=d)
    assert fake.requests[POST] == 0


def test_a_listed_young_intent_does_not_hide_the_next_one(session: Session, fake: FakeAlpaca) -> None:
    """HELD. Two young intents: the older one's order is open at Alpaca (listed), the newer one
    (IWM) has not landed. The listed one is skipped as counted; the next is still working, so
    the strategy (IWM, max_position_size 1) does not buy IWM beside it."""
    setup(session, symbols=("IWM",), limits=Limits(max_position_size=1))
    _young(session, "se-young-a0000000000000000", symbol="SPY")
    _young(session, "se-young-b0000000000000000", symbol="IWM")
    fake.set_policy("manual")
    _lands(fake, "se-young-a0000000000000000", symbol="SPY")
    engine.tick(session, T1, deps=deps(fake))
    assert fake.requests[POST] == 0  # no IWM (the SPY order was placed at Alpaca directly)
    assert logs(session)[-1][1:4] == ("IWM", "order_working", "held")


# ---- never landing, gave up ------------------------------------------------------------------------


def test_a_young_intent_that_never_lands_is_working_until_its_window_then_voided(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. Its worker died before the POST: SPY is working (no order) while the row is young,
    then reconciliation voids it and the strategy enters once."""
    setup(session, limits=Limits(max_position_size=1))
    _young(session)
    fake.set_policy("instant")
    engine.tick(session, T1, deps=deps(fake))
    assert (logs(session), _rows(session)) == (
        [(T1, "SPY", "order_working", "held", None)],
        [(CID, "intent")],
    )
    _age(session)
    engine.tick(session, T2, deps=deps(fake))
    assert logs(session)[-1] == (T2, "SPY", "entry_long", "ordered", None)
    assert _rows(session)[0] == (CID, "void")
    assert (fake.requests[POST], _held(fake)) == (1, 1.0)


def test_a_young_intent_whose_worker_gave_up_is_not_in_flight(session: Session, fake: FakeAlpaca) -> None:
    """HELD. Its send raised (`gave_up` set `error`) and nothing is at the broker: not working,
    voided at once, and the strategy enters in the same minute."""
    setup(session, limits=Limits(max_position_size=1))
    _young(session, error="BrokerUnavailable: 503")
    fake.set_policy("instant")
    engine.tick(session, T1, deps=deps(fake))
    assert logs(session)[-1] == (T1, "SPY", "entry_long", "ordered", None)
    assert _rows(session)[0] == (CID, "void")
    assert (fake.requests[POST], _held(fake)) == (1, 1.0)


# ---- anything else ----------------------------------------------------------------------------------


class RecentDown(AlpacaPaperBroker):
    def recent_orders(self, after: datetime) -> list[Order]:
        raise BrokerUnavailable("Alpaca GET /v2/orders (recent) failed: 503")


def test_the_recent_list_failing_sends_nothing_and_settles_after(session: Session, fake: FakeAlpaca) -> None:
    """HELD. The recent list fails (the other reads succeed) while a young intent's order has
    filled: the minute sends nothing and leaves the row as it is; once the list answers again the
    row is settled `filled`, and there is still one order."""
    setup(session, limits=Limits(max_position_size=1))
    _young(session)
    fake.set_policy("instant")
    _lands(fake)
    down = engine.Deps(
        alpaca_broker=lambda _a: RecentDown(
            SecretStr(KEY), SecretStr(SECRET), fake.url, timeout_seconds=5, retry_budget_seconds=20
        ),
        policy=REPLAY,
    )
    r = engine.tick(session, T1, deps=down)
    assert [x.outcome for x in r.strategies] == [StrategyOutcome.FAILED]
    assert (r.orders, _rows(session), logs(session)) == (0, [(CID, "intent")], [])
    engine.tick(session, T2, deps=deps(fake))
    assert _rows(session) == [(CID, "filled")]
    assert (fake.requests[POST], fake.orders_accepted, _held(fake)) == (0, 1, 1.0)


def test_two_young_intents_for_one_symbol_count_both_against_buying_power(db_url: str) -> None:
    """HELD. Two young SPY buys of 5 (strategy a's and a manual one, about $500 each), not landed,
    on a $1,050 cash account: both are held back, so strategy b's IWM buy (about $100) finds $50
    and is blocked."""
    with FakeAlpaca(cash=1050, multiplier=1) as fake, connect(db_url) as s:
        setup(s, ("IWM",))
        seed(s, name="a", account=ACCOUNT, broker="alpaca", config={"symbols": ["SPY"]})
        entry_setup(s, ("SPY",), T)
        _young(s, qty=5, strategy="a")
        _young(s, "se-m-young000000000000000000", qty=5, strategy=None)
        engine.tick(s, T1, only="nft", deps=deps(fake))
        assert logs(s) == [(T1, "IWM", "entry_long", "blocked", "buying_power")]
        assert fake.requests[POST] == 0


def test_a_young_intent_on_another_account_does_not_block_this_one(
    session: Session, fake: FakeAlpaca
) -> None:
    """HELD. A young SPY buy on another Alpaca account is not this account's working order: the
    strategy enters SPY on its own account at once."""
    setup(session, limits=Limits(max_position_size=1))
    session.execute("insert into broker_accounts (name, broker, is_paper) values ('other', 'alpaca', true)")
    _young(session, strategy=None, account="other")
    fake.set_policy("instant")
    engine.tick(session, T1, deps=deps(fake))
    assert logs(session)[-1] == (T1, "SPY", "entry_long", "ordered", None)
    assert (fake.requests[POST], _held(fake)) == (1, 1.0)


class Recorder(AlpacaPaperBroker):
    """The real broker, its four reads noted as they start and end."""

    events: list[str]

    calls: Counter[str]

    def _noted(self, name: str, fn: Callable[[], Any]) -> Any:
        self.calls[name] += 1
        which = "ahead" if self.calls[name] == 1 else "again"  # sent ahead, then read again
        self.events.append(f"{which} start {name}")
        out = fn()
        self.events.append(f"{which} end {name}")
        return out

    def account(self) -> Account:
        result: Account = self._noted("account", super().account)
        return result

    def positions(self) -> list[Position]:
        result: list[Position] = self._noted("positions", super().positions)
        return result

    def open_orders(self) -> list[Order]:
        result: list[Order] = self._noted("open", super().open_orders)
        return result

    def recent_orders(self, after: datetime) -> list[Order]:
        sup = super().recent_orders
        result: list[Order] = self._noted("recent", lambda: sup(after))
        return result


@pytest.mark.parametrize("intents", [True, False])
def test_an_account_with_intents_is_read_lists_first_and_one_without_all_at_once(
    session: Session, intents: bool
) -> None:
    """With an intent row on the account (a POST may land while it is read), the order lists
    are answered before the account and positions are asked for; without one, the reads sent
    ahead (all four at once) are used."""
    with FakeAlpaca(delay=0.05) as fake:  # each read takes a round trip: at once means overlapping
        read_in_order(session, fake, intents)


def read_in_order(session: Session, fake: FakeAlpaca, intents: bool) -> None:
    setup(session)
    if intents:
        _young(session)
    events: list[str] = []
    calls: Counter[str] = Counter()  # one client per invocation: shared by the reads ahead and again

    def build(_a: Any) -> AlpacaPaperBroker:
        b = Recorder(SecretStr(KEY), SecretStr(SECRET), fake.url, timeout_seconds=5, retry_budget_seconds=20)
        b.events, b.calls = events, calls
        return b

    engine.tick(session, T1, deps=engine.Deps(alpaca_broker=build, policy=REPLAY))
    ahead = [e.split(" ", 1)[1] for e in events if e.startswith("ahead")]
    under_lock = [e.split(" ", 1)[1] for e in events if e.startswith("again")]
    assert all(e.startswith("start") for e in ahead[:4]), ahead  # sent ahead all four at once
    assert sorted(ahead) == sorted(
        f"{e} {n}" for e in ("start", "end") for n in ("account", "positions", "open", "recent")
    )
    if not intents:
        assert under_lock == []  # the reads sent ahead were used
        return
    lists = [under_lock.index(f"end {n}") for n in ("open", "recent")]
    balances = [under_lock.index(f"start {n}") for n in ("account", "positions")]
    assert max(lists) < min(balances), under_lock
