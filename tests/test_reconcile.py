"""Every order known (issue 12): working orders are exposure, write-ahead intents are reconciled.

Real Postgres, real alpaca-py, the loopback Alpaca with its realistic lifecycle. Each crash is a
real one (a subprocess killed with os._exit after Alpaca accepted) or a real store error (a value
the journal cannot encode) and the run that follows is the NEXT minute, not a retry.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from strategy_engine import engine
from strategy_engine.brokers.alpaca import AlpacaPaperBroker
from strategy_engine.core.models import Limits, Order, OrderIntent, StrategyOutcome
from strategy_engine.store import Session, connect
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca, Policy
from tests.test_alpaca_engine import ACCOUNT, KILLER, POST, REPLAY, deps, trades
from tests.test_exactly_once import T, entry_setup

LOOKUP = "GET /v2/orders:by_client_order_id"
T1, T2 = T + timedelta(minutes=1), T + timedelta(minutes=2)
UNFILLED_OR_FILLED = pytest.mark.parametrize("fill", ["manual", "instant"])


def setup(
    s: Session, symbols: tuple[str, ...] = ("SPY",), limits: Limits | None = None, **config: Any
) -> None:
    """Entry long wanted at T, T+1 and T+2 (rising bars up to T+1, bullish flow at T-2)."""
    seed(s, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols), **config}, limits=limits)
    entry_setup(s, symbols, T)
    s.execute(
        "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
        " select sym, %s + make_interval(mins => k), 100, 100, 100, 100 + k, 1000"
        " from unnest(%s::text[]) sym, generate_series(0, 1) k",
        (T, list(symbols)),
    )


def logs(s: Session) -> list[tuple[Any, ...]]:
    return s.fetchall(
        "select decision_minute, symbol, reason, outcome, risk_code from strategy_logs"
        " order by decision_minute, symbol, outcome desc"
    )


def day(s: Session) -> tuple[Any, ...] | None:
    return s.fetchone("select trades_today, notional_today::float8 from strategy_state")


def test_three_entry_minutes_with_the_order_left_unfilled_send_one_order(
    session: Session, fake: FakeAlpaca
) -> None:
    setup(session, limits=Limits(max_position_size=1))
    fake.set_policy("manual")  # accepted, never filled
    results = [engine.tick(session, m, deps=deps(fake)) for m in (T, T1, T2)]
    assert [r.orders for r in results] == [1, 0, 0]
    assert (fake.requests[POST], fake.orders_accepted) == (1, 1)
    assert fake.requests[LOOKUP] == 0  # the working order is read from the one list call per tick
    assert logs(session) == [
        (T, "SPY", "entry_long", "ordered", None),
        (T1, "SPY", "order_working", "held", None),
        (T2, "SPY", "order_working", "held", None),
    ]
    assert trades(session)[0][3:5] == ("accepted", 0.0)


def test_working_orders_count_in_open_positions_and_buying_power(session: Session, fake: FakeAlpaca) -> None:
    setup(session, ("QQQ", "SPY"), limits=Limits(max_open_positions=1))
    fake.set_policy("manual")
    fake.place({"symbol": "QQQ", "side": "buy", "qty": "3", "client_order_id": "someone-else-1"})
    engine.tick(session, T, deps=deps(fake))
    assert logs(session) == [
        (T, "QQQ", "order_working", "held", None),  # the strategy sees long 3 (working) and holds
        (T, "SPY", "entry_long", "blocked", "max_open_positions"),  # QQQ's working buy is open
    ]
    row = session.fetchone(
        "select c->>'observed', c->>'limit' from strategy_logs,"
        " jsonb_array_elements(signal_payload->'risk'->'checks') c"
        " where symbol = 'SPY' and c->>'code' = 'buying_power'"
    )
    mirrored = session.fetchone("select buying_power::float8 from broker_balances")
    assert row is not None and mirrored is not None
    # Alpaca's buying power already holds back its open buys (the fake models it): not again
    assert mirrored[0] == float(fake.buying_power())
    assert float(row[1]) == pytest.approx(mirrored[0])


def _kill_after_accept(db_url: str, fake: FakeAlpaca) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, db_url, T.isoformat(), fake.url, KEY, SECRET],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr
    assert fake.orders_accepted == 1


def _canceled_after_accept(db_url: str, fake: FakeAlpaca) -> dict[str, Any]:
    """T's minute killed after Alpaca accepted its one order; then Alpaca canceled it, unfilled."""
    with connect(db_url) as s:
        setup(s)
    fake.set_policy("manual")
    _kill_after_accept(db_url, fake)
    (order,) = fake.orders.values()
    fake.cancel(order["id"])
    fake.tick()  # pending_cancel -> canceled
    return order


@UNFILLED_OR_FILLED
def test_crash_after_accept_then_the_next_minute_first_records_and_counts_the_order(
    db_url: str, fake: FakeAlpaca, fill: str
) -> None:
    with connect(db_url) as s:
        setup(s)
    fake.set_policy(fill)
    _kill_after_accept(db_url, fake)
    with connect(db_url) as s:
        nxt = engine.tick(s, T1, deps=deps(fake))
        assert (nxt.orders, nxt.strategies[0].reconciled) == (0, 1)
        held = "order_working" if fill == "manual" else "hold_position"  # working, or long 1
        assert logs(s) == [(T, "SPY", "reconciled", "reconciled", None), (T1, "SPY", held, "held", None)]
        status = ("accepted", 0.0, None) if fill == "manual" else ("filled", 1.0, 100.0)
        assert [r[3:6] for r in trades(s)] == [status]
        assert day(s) == (1, 99.5)  # counted at the decision price of T
        late = engine.tick(s, T, deps=deps(fake))  # the retry of T arrives after all
        assert late.strategies[0].outcome is StrategyOutcome.ALREADY_PROCESSED
    assert (fake.requests[POST], fake.orders_accepted) == (1, 1)


class _StoreFailsAfterAccept(AlpacaPaperBroker):
    """Alpaca accepts; the answer handed back cannot be stored (text with a NUL byte)."""

    def submit(self, intent: OrderIntent) -> Order:
        order = super().submit(intent)
        return Order(**{**{f: getattr(order, f) for f in order.__slots__}, "status": "accepted\x00"})


@UNFILLED_OR_FILLED
def test_store_error_after_accept_then_the_next_minute_records_the_order(
    session: Session, fake: FakeAlpaca, fill: str, caplog: pytest.LogCaptureFixture
) -> None:
    setup(session)
    fake.set_policy(fill)
    poisoned = engine.Deps(
        alpaca_broker=lambda _account: _StoreFailsAfterAccept(
            SecretStr(KEY), SecretStr(SECRET), fake.url, timeout_seconds=5, retry_budget_seconds=20
        ),
        policy=REPLAY,
    )
    failed = engine.tick(session, T, deps=poisoned)  # the store error fails this strategy alone
    assert failed.strategies[0].outcome is StrategyOutcome.FAILED
    assert (failed.strategies[0].error or "").startswith("DataError")
    assert [(r[0], r[3]) for r in trades(session)] == [("SPY", "intent")]  # the minute rolled back
    assert logs(session) == []
    caplog.set_level(logging.INFO, logger="strategy_engine")
    nxt = engine.tick(session, T1, deps=deps(fake))
    assert nxt.strategies[0].reconciled == 1
    assert logs(session)[0] == (T, "SPY", "reconciled", "reconciled", None)
    placed = fake.by_client_id(trades(session)[0][1])
    assert placed is not None
    assert [r[2:5] for r in trades(session)] == [
        (placed["id"], placed["status"], float(placed["filled_qty"]))
    ]
    assert fake.orders_accepted == 1
    # The reconciled decision's own row: the order as the broker holds it, under its client id.
    cid = trades(session)[0][1]
    price = float(placed["filled_avg_price"]) if placed["filled_avg_price"] is not None else None
    assert session.fetchone(
        "select action, qty::float8, client_order_id, signal_payload from strategy_logs"
        " where reason = 'reconciled'"
    ) == (
        "buy",
        1.0,
        cid,
        {
            "reconciled": True,
            "status": placed["status"],
            "filled_qty": float(placed["filled_qty"]),
            "filled_avg_price": price,
            "broker_order_id": placed["id"],
        },
    )
    events = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "order"]
    said = [e for e in events if e["outcome"] == "reconciled"]
    assert [(e["symbol"], e["side"], e["qty"], e["client_order_id"]) for e in said] == [
        ("SPY", "buy", 1.0, cid)
    ]


def test_an_intent_the_broker_canceled_unfilled_is_logged_failed_and_not_counted(
    db_url: str, fake: FakeAlpaca
) -> None:
    order = _canceled_after_accept(db_url, fake)
    with connect(db_url) as s:
        nxt = engine.tick(s, T1, deps=deps(fake))
        assert logs(s)[0] == (T, "SPY", "reconciled", "failed", None)
        assert s.fetchone(
            "select client_order_id, signal_payload->>'error' from strategy_logs where reason = 'reconciled'"
        ) == (order["client_order_id"], "the broker holds it as canceled, nothing filled")
        assert s.fetchone(
            "select status, error from paper_trades where client_order_id = %s", (order["client_order_id"],)
        ) == ("canceled", "the broker holds it as canceled, nothing filled")
        assert nxt.orders == 1  # nothing works any more: T+1 enters
        assert day(s) == (1, 100.0)  # T+1's order only: the canceled one counts in neither
        assert sorted(r[3] for r in trades(s)) == ["accepted", "canceled"]


def test_the_retry_of_a_minute_whose_order_was_canceled_does_not_decide_that_symbol_again(
    db_url: str, fake: FakeAlpaca
) -> None:
    """Killed after Alpaca accepted T's order; the broker canceled it, unfilled; then T's retry
    arrives. It records the order (reconciled, failed) and counts the symbol as having its
    order for this very minute, so the entry is blocked (`order_working`): sent, the same
    client id would be looked up and the canceled order recorded a second time (its row locked
    by the minute's own reconcile, which the intent connection would wait for)."""
    _canceled_after_accept(db_url, fake)
    with connect(db_url) as s:
        retry = engine.tick(s, T, deps=deps(fake))
        assert [(r.outcome, r.error, r.reconciled, r.orders) for r in retry.strategies] == [
            (StrategyOutcome.PROCESSED, None, 0, 0)  # a failed reconciled order is no reconciliation count
        ]
        assert logs(s) == [
            (T, "SPY", "reconciled", "failed", None),
            (T, "SPY", "entry_long", "blocked", "order_working"),  # its order for T exists
        ]
        assert day(s) == (0, 0.0)  # canceled unfilled: counts in neither
    assert (fake.requests[POST], fake.orders_accepted) == (1, 1)


def test_an_intent_that_never_reached_the_broker_is_void_and_the_minute_sends_again(
    session: Session, fake: FakeAlpaca
) -> None:
    setup(session)
    fake.fail(POST, 503, times=10_000)  # nothing lands
    assert engine.tick(session, T, deps=deps(fake)).status == "failed"
    fake.heal()
    retry = engine.tick(session, T, deps=deps(fake))
    assert (retry.orders, retry.strategies[0].reconciled) == (1, 0)
    assert fake.orders_accepted == 1
    assert [(r[0], r[3]) for r in trades(session)] == [("SPY", "accepted")]


def test_a_broker_order_with_our_prefix_and_no_row_is_adopted(
    session: Session, fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    setup(session)
    fake.set_policy("manual")
    fake.place({"symbol": "IWM", "side": "buy", "qty": "2", "client_order_id": "se-m-orphan000000000000000"})
    fake.place({"symbol": "IWM", "side": "buy", "qty": "1", "client_order_id": "not-ours"})
    with caplog.at_level(logging.WARNING, logger="strategy_engine"):
        engine.tick(session, T, deps=deps(fake))
    said = [
        (r.levelno, getattr(r, "fields", {})) for r in caplog.records if r.getMessage() == "order adopted"
    ]
    assert said == [
        (logging.WARNING, {"client_order_id": "se-m-orphan000000000000000", "status": "accepted"})
    ]
    rows = session.fetchall(
        "select client_order_id, symbol, qty::float8, status, strategy_id, error, source,"
        " account_id = (select id from broker_accounts where name = %s) from paper_trades"
        " where symbol = 'IWM'",
        (ACCOUNT,),
    )
    assert rows == [
        (
            "se-m-orphan000000000000000",
            "IWM",
            2.0,
            "accepted",
            None,
            "adopted: the broker holds it, the journal had no row",
            "strategy",
            True,
        )
    ]


def test_orders_in_non_final_statuses_are_refreshed_until_final(session: Session, fake: FakeAlpaca) -> None:
    setup(session)
    fake.set_policy("manual")
    engine.tick(session, T, deps=deps(fake))
    (order,) = fake.orders.values()
    order["status"] = "stopped"  # not in the open list: the day's list (status=all) has it
    stopped = engine.tick(session, T1, deps=deps(fake))
    assert trades(session)[0][3] == "stopped"
    assert stopped.orders == 0  # it may still fill: working, so no second buy
    order.update(status="filled", filled_qty="1", filled_avg_price="100")
    engine.tick(session, T2, deps=deps(fake))
    assert trades(session)[0][3:6] == ("filled", 1.0, 100.0)
    engine.tick(session, T2 + timedelta(minutes=1), deps=deps(fake))
    assert trades(session)[0][3:6] == ("filled", 1.0, 100.0)
    assert fake.requests[LOOKUP] == 0  # answered by the lists read with the account, never one by one


def test_an_unsettled_order_older_than_the_days_list_is_looked_up_by_client_id(
    session: Session, fake: FakeAlpaca
) -> None:
    setup(session)
    fake.set_policy("manual")
    engine.tick(session, T, deps=deps(fake))
    (order,) = fake.orders.values()
    order.update(status="stopped", submitted_at="2000-01-03T15:00:00Z")  # out of the day's list
    engine.tick(session, T1, deps=deps(fake))
    assert trades(session)[0][3] == "stopped"
    assert fake.requests[LOOKUP] == 1


def left_intent(s: Session, cid: str, qty: int = 1, price: float | None = 100.0) -> None:
    """The `intent` row of a minute that died after its POST, past the in-flight window, on an
    inactive strategy (no orders of its own at the next run)."""
    setup(s)
    s.execute("update strategy_definitions set is_active = false")
    row = s.fetchone("select account_id, id from strategy_definitions")
    assert row is not None
    s.execute(
        "insert into paper_trades (strategy_id, account_id, source, decision_minute, client_order_id,"
        " symbol, side, qty, decision_price, status, updated_at) values (%s, %s, 'strategy', %s, %s,"
        " 'SPY', 'buy', %s, %s, 'intent', now() - interval '1 hour')",
        (row[1], row[0], T - timedelta(minutes=5), cid, qty, price),
    )


@pytest.mark.parametrize("listed", [True, False], ids=["in the recent list", "older than it"])
def test_a_left_intent_is_settled_from_the_recent_list_else_looked_up_never_voided(
    session: Session, fake: FakeAlpaca, listed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An intent left by a minute that died after its POST, past the in-flight window: found in
    the recent list (no request of its own), else looked up by client id (its order older than
    the list reaches): recorded as the broker holds it, never voided."""
    cid = "se-left0000000000000000000"
    left_intent(session, cid)
    fake.set_policy("instant")
    _, placed = fake.place({"symbol": "SPY", "side": "buy", "qty": "1", "client_order_id": cid})
    if not listed:
        fake.orders[placed["id"]]["submitted_at"] = "2000-01-03T15:00:00Z"  # out of the recent list
    with caplog.at_level(logging.INFO, logger="strategy_engine"):
        result = engine.tick(session, T, deps=deps(fake))
    assert result.strategies[0].reconciled == 1
    assert session.fetchall("select client_order_id, status, error from paper_trades") == [
        (cid, "filled", None)
    ]
    assert fake.requests[LOOKUP] == (0 if listed else 1)
    said = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "order reconciled"]
    assert said == [{"client_order_id": cid, "status": "filled", "symbol": "SPY"}]


def test_a_left_intent_the_broker_never_got_is_voided_saying_why(session: Session, fake: FakeAlpaca) -> None:
    left_intent(session, "se-never000000000000000000")
    engine.tick(session, T, deps=deps(fake))
    assert session.fetchall("select status, error from paper_trades") == [
        ("void", "not at the broker: never sent, or refused before the answer was recorded")
    ]


@pytest.mark.parametrize("fill", ["instant", "manual"])
def test_a_left_intent_without_a_decision_price_counts_at_its_fill_price(
    session: Session, fake: FakeAlpaca, fill: str
) -> None:
    """An intent row without its decision price (written before there was one): reconciled, it
    counts in the day's notional at the broker's fill price, or at nothing while unfilled."""
    cid = "se-noprice00000000000000000"
    left_intent(session, cid, qty=2, price=None)
    fake.set_policy(fill)
    fake.place({"symbol": "SPY", "side": "buy", "qty": "2", "client_order_id": cid})
    engine.tick(session, T, deps=deps(fake))
    row = session.fetchone("select filled_avg_price::float8 from paper_trades")
    assert row is not None
    assert (row[0] is not None) is (fill == "instant")
    assert day(session) == (1, 2 * row[0] if row[0] is not None else 0.0)


def test_a_partly_filled_entry_holds_back_the_exit_while_its_remainder_works(
    session: Session, fake: FakeAlpaca
) -> None:
    setup(session, order_qty=10)
    fake.set_policy(Policy(after=1, partial=Decimal("0.4"), rest=False))  # 4 of 10, 6 left working
    engine.tick(session, T, deps=deps(fake))
    session.execute(  # the trend turns: strongly bearish flow just before T+2
        "insert into options_flow (ts, underlying, option_type, side, size, trade_price)"
        " values (%s, 'SPY', 'put', 'buy', 5000, 5)",
        (T1,),
    )
    engine.tick(session, T2, deps=deps(fake))
    assert logs(session)[-1] == (T2, "SPY", "exit_long", "blocked", "order_working")
    payload = session.fetchone(
        "select signal_payload->>'position_qty', signal_payload->>'working_qty' from strategy_logs"
        " where decision_minute = %s",
        (T2,),
    )
    assert payload == ("10.0", "6.0")  # it sees 4 held + 6 working
    assert (fake.requests[POST], fake.orders_accepted) == (1, 1)  # no sell beside the working buy
