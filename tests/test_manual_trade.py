"""The manual trade is a safe order: account-level checks, an idempotency key, the simulated
broker refusing what Alpaca paper refuses, and the default Alpaca account created on first use.
Configs the broker cannot honour are refused when saved."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strategy_engine import manual_trade as mt
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core.errors import InputError, OrderRejected
from strategy_engine.core.models import Order, OrderIntent, Position, Side
from strategy_engine.engine import Deps
from strategy_engine.seed import save_strategy
from strategy_engine.store import Session, connect
from strategy_engine.store import accounts as acct_store
from strategy_engine.store.intents import IntentLog
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_exactly_once import T, entry_setup
from tests.test_money_guards import _waiting_for_a_lock

PRICE = 99.5  # entry_setup's last close (bar T-1): 100 - 1 * 0.5
AT_T = Deps(clock=lambda: T)


def trade(s: Session, side: str, qty: float, *, account: str = "sim", **kw: Any) -> Any:
    return mt.manual_trade(s, account, "SPY", side, qty, deps=kw.pop("deps", AT_T), **kw)


def state(s: Session) -> tuple[Any, ...]:
    """(paper_trades rows, SPY position, cash) of the simulated account."""
    rows = s.fetchall(
        "select client_order_id, side, qty::float8, status, source from paper_trades order by 1"
    )
    pos = s.fetchone("select qty::float8 from broker_positions where symbol = 'SPY'")
    cash = s.fetchone("select cash::float8 from broker_balances")
    return rows, None if pos is None else pos[0], None if cash is None else cash[0]


@pytest.fixture
def sim(session: Session) -> Session:
    """A simulated account with $93k and a fresh SPY price at T."""
    seed(session, cash=93_000.0)
    entry_setup(session, ("SPY",), T)
    return session


@pytest.mark.parametrize(
    ("side", "qty", "kw", "message"),
    [
        ("buy", 1000, {}, "refused: buying_power (observed 99,500.00, limit 93,000.00)"),
        ("buy", 10_001, {}, "over the manual cap of 10000 shares"),
        ("buy", 1e-10, {}, "more than 9 decimal places"),
        ("sell", 1, {}, "would open a short of 1: pass --allow-short"),
        ("sell", 1.5, {"allow_short": True}, "fractional shares cannot be sold short"),
        (
            "buy",
            1,
            {"deps": Deps(clock=lambda: T + timedelta(minutes=3))},
            "refused: stale_data (observed 240",
        ),
        ("buy", 1, {"client_order_id": "has space"}, "client order id must be"),
    ],
    ids=["buying-power", "qty-cap", "decimals", "short", "fractional-short", "stale", "bad-id"],
)
def test_a_manual_order_failing_a_check_is_one_readable_refusal_and_nothing_written(
    sim: Session, side: str, qty: float, kw: dict[str, Any], message: str
) -> None:
    before = state(sim)
    with pytest.raises(InputError) as err:
        trade(sim, side, qty, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert state(sim) == before


def test_an_order_within_the_checks_fills_and_is_recorded_as_manual(sim: Session) -> None:
    order = trade(sim, "buy", 900)  # 89,550 of 93,000
    assert (order.status, order.filled_qty, order.filled_avg_price) == ("filled", 900.0, PRICE)
    assert state(sim) == (
        [(order.client_order_id, "buy", 900.0, "filled", "manual")],
        900.0,
        93_000.0 - 900 * PRICE,
    )


def test_re_running_the_same_command_in_the_minute_never_doubles_the_order(sim: Session) -> None:
    first = trade(sim, "buy", 3)
    again = trade(sim, "buy", 3)
    assert first == again and first.client_order_id.startswith("se-m-")
    assert state(sim) == (
        [(first.client_order_id, "buy", 3.0, "filled", "manual")],
        3.0,
        93_000.0 - 3 * PRICE,
    )
    a_minute_later = Deps(clock=lambda: T + timedelta(seconds=61))
    with pytest.raises(InputError) as err:  # a re-run after a timeout: the default id has moved on
        trade(sim, "buy", 3, deps=a_minute_later)
    assert str(err.value) == (
        f"the same order (buy 3 SPY on sim) went out at {T:%H:%M} UTC as {first.client_order_id}"
        " (filled): pass --again to place another one"
    )
    assert state(sim)[1] == 3.0
    next_minute = trade(sim, "buy", 3, deps=a_minute_later, again=True)
    assert next_minute.client_order_id != first.client_order_id
    assert state(sim)[1] == 6.0


def test_a_caller_given_key_is_the_order_and_cannot_name_another(sim: Session) -> None:
    order = trade(sim, "buy", 2, client_order_id="desk-42")
    later = trade(
        sim, "buy", 2, client_order_id="desk-42", deps=Deps(clock=lambda: T + timedelta(seconds=90))
    )
    assert order.client_order_id == later.client_order_id == "desk-42"
    with pytest.raises(InputError, match="already names another order"):
        trade(sim, "buy", 5, client_order_id="desk-42")
    assert state(sim)[:2] == ([("desk-42", "buy", 2.0, "filled", "manual")], 2.0)


def test_a_short_with_allow_short_goes_through_on_a_margin_account(sim: Session) -> None:
    order = trade(sim, "sell", 2, allow_short=True)
    assert (order.status, order.filled_qty) == ("filled", 2.0)
    assert state(sim)[1] == -2.0


def test_a_short_on_an_account_without_margin_is_refused_as_alpaca_would(session: Session) -> None:
    seed(session, cash=1_500.0)  # under Alpaca's $2,000 margin minimum: a cash account
    entry_setup(session, ("SPY",), T)
    before = state(session)
    with pytest.raises(
        InputError, match=r"insufficient qty available for order \(requested: 1, available: 0\)"
    ):
        trade(session, "sell", 1, allow_short=True)
    assert state(session) == before


# ---- the simulated broker refuses what Alpaca paper refuses --------------------------------------


def intent(side: Side, qty: float, price: float = 100.0) -> OrderIntent:
    return OrderIntent("SPY", side, qty, price, f"se-{side}-{qty}")


@pytest.mark.parametrize(
    ("cash", "held", "order", "message"),
    [
        (1_000.0, 0.0, intent(Side.BUY, 11), "insufficient buying power"),
        (100_000.0, 0.0, intent(Side.SELL, 0.5), "fractional shares cannot be sold short"),
        (100_000.0, 0.25, intent(Side.SELL, 1.25), None),  # 0.25 closes the long, 1 whole share goes short
        (100_000.0, 0.0, intent(Side.BUY, 1.0000000001), "more than 9 decimal places"),
        (1_999.0, 0.0, intent(Side.SELL, 1), "insufficient qty available"),
        (100_000.0, -3.0, intent(Side.BUY, 3), None),  # covering a short needs no buying power check
    ],
    ids=["buying-power", "fractional-short", "long-to-whole-short", "decimals", "no-margin", "cover"],
)
def test_the_simulated_broker_refuses_what_alpaca_refuses(
    cash: float, held: float, order: OrderIntent, message: str | None
) -> None:
    broker = SimulatedBroker(cash, [Position("SPY", held, 100.0)] if held else [])
    if message is None:
        assert broker.submit(order).filled_qty == order.qty
        return
    with pytest.raises(OrderRejected, match=message):
        broker.submit(order)
    assert (broker.cash, broker.position_qty("SPY")) == (cash, held)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"order_qty": 0.5, "allow_short": True}, "fractional shares cannot be sold short"),
        ({"order_qty": 1e-10}, "more than 9 decimal places"),
        ({"order_qty": 0.5}, None),
        ({"order_qty": 3, "allow_short": True}, None),
    ],
)
def test_a_config_the_broker_cannot_honour_is_refused_when_saved(
    session: Session, config: dict[str, Any], message: str | None
) -> None:
    def save() -> None:
        save_strategy(session, "x", "naive_flow_trend", config, account="a")

    if message is None:
        save()
        assert session.fetchone("select count(*) from strategy_definitions") == (1,)
        return
    with pytest.raises(InputError, match=f"config.*order_qty.*{message}"):
        save()
    assert session.fetchone("select count(*) from strategy_definitions") == (0,)


# ---- Alpaca: the default account, write-ahead, idempotency ---------------------------------------


def spy_bar_a_minute_ago(db_url: str) -> None:
    """A SPY bar at $100 one minute before this minute: the price of a manual order sent now."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with connect(db_url) as s:
        s.execute(
            "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
            " values ('SPY', %s, 100, 100, 100, 100, 1000)",
            (now - timedelta(minutes=1),),
        )


def test_trade_on_a_fresh_database_with_alpaca_keys_creates_the_default_account(
    db_url: str, fake: FakeAlpaca
) -> None:
    spy_bar_a_minute_ago(db_url)
    env = {**os.environ, "ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET, "ALPACA_BASE_URL": fake.url}
    args = [
        sys.executable,
        "-m",
        "strategy_engine.cli",
        "trade",
        "--symbol",
        "SPY",
        "--side",
        "buy",
        "--qty",
        "1",
    ]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, "--client-order-id", "se-m-desk-1", "--database-url", db_url],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            check=False,
            timeout=120,
        )

    first, again = run(), run()
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert "client_order_id=se-m-desk-1" in first.stdout and "client_order_id=se-m-desk-1" in again.stdout
    assert fake.requests["POST /v2/orders"] == 1  # the re-run found the order: nothing re-sent
    with connect(db_url) as s:
        assert s.fetchall("select name, broker from broker_accounts") == [("alpaca-paper", "alpaca")]
        rows = s.fetchall("select source, symbol, side, qty::float8 from paper_trades")
        assert rows == [("manual", "SPY", "buy", 1.0)]


def test_a_manual_alpaca_order_is_written_ahead_and_a_rerun_in_the_minute_is_not_resent(
    session: Session, fake: FakeAlpaca
) -> None:
    from tests.test_alpaca_engine import deps as alpaca_deps

    seed(session, account="alpaca-paper", broker="alpaca")
    entry_setup(session, ("SPY",), T)
    d = alpaca_deps(fake)
    d.clock = lambda: T + timedelta(seconds=20)
    first = mt.manual_trade(session, "alpaca-paper", "SPY", "buy", 2, deps=d)
    d.clock = lambda: T + timedelta(seconds=50)
    again = mt.manual_trade(session, "alpaca-paper", "SPY", "buy", 2, deps=d)
    assert (
        first.client_order_id
        == again.client_order_id
        == mt.manual_client_id("alpaca-paper", "SPY", "buy", 2, "2025-06-13T15:00:00Z")
    )
    assert fake.requests["POST /v2/orders"] == 1 and fake.by_client_id(first.client_order_id) is not None
    rows = session.fetchall("select source, decision_price::float8, status from paper_trades")
    assert rows == [("manual", PRICE, again.status)]  # the intent row, overwritten with the answer


@pytest.mark.parametrize("at_the_broker", [True, False], ids=["order-found", "nothing-there"])
def test_an_id_written_by_another_sender_while_this_trade_waited_is_looked_up_never_resent(
    session: Session, db_url: str, fake: FakeAlpaca, at_the_broker: bool
) -> None:
    """Two runs of one manual order at once: the second finds nothing in the journal, then waits
    for the account's lock while the first commits its intent under the same client id. Its own
    intent write then leaves the id out (it names an order already): the order the broker holds
    is the answer; with none there, the id is refused as taken. Either way nothing is POSTed."""
    from tests.test_alpaca_engine import deps as alpaca_deps

    seed(session, account="alpaca-paper", broker="alpaca")
    entry_setup(session, ("SPY",), T)
    found = acct_store.find_account(session, "alpaca-paper")
    assert found is not None
    account_id, cid = found[0].id, "desk-race-0"
    d = alpaca_deps(fake)
    d.clock = lambda: T + timedelta(seconds=20)
    answer: list[object] = []

    def second() -> None:
        with connect(db_url, application_name="second-trade") as s:
            try:
                answer.append(
                    mt.manual_trade(s, "alpaca-paper", "SPY", "buy", 1, client_order_id=cid, deps=d)
                )
            except Exception as exc:  # the test's answer, whatever it is
                answer.append(exc)

    worker = threading.Thread(target=second)
    with connect(db_url) as watcher, session.transaction():  # the first run holds the account
        acct_store.lock_account(session, account_id)
        worker.start()
        while worker.is_alive() and not _waiting_for_a_lock(watcher, "second-trade"):
            worker.join(0.01)
        first = IntentLog(session)
        try:
            first.write(None, account_id, "manual", T, [OrderIntent("SPY", Side.BUY, 1, PRICE, cid)])
            if at_the_broker:  # the first run's POST landed and filled
                (order_id,) = fake.hold_open(1, symbol="SPY", prefix="desk-race-")
                fake.fill(cid)
            else:  # its POST raised before reaching Alpaca
                first.gave_up(cid, "BrokerUnavailable: 503")
        finally:
            first.close()
    worker.join(30)
    assert fake.requests["POST /v2/orders"] == 0
    (got,) = answer
    if at_the_broker:
        assert isinstance(got, Order)
        assert (got.client_order_id, got.broker_order_id, got.status) == (cid, order_id, "filled")
        row = session.fetchall("select client_order_id, broker_order_id, status from paper_trades")
        assert row == [(cid, order_id, "filled")]
    else:
        assert isinstance(got, InputError)
        assert str(got) == f"refused before sending: client id {cid} is taken: nothing sent"
