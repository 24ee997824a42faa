"""The simulated broker's fills against prices and averages worked out by hand.

The tick and the backfill share this class, so comparing them cannot see a wrong fill: these
cases compare it with arithmetic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core.errors import OrderRejected
from strategy_engine.core.models import Account, OrderIntent, Position, Side

NOW = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)


def intent(side: Side, qty: float, price: float, cid: str) -> OrderIntent:
    return OrderIntent("SPY", side, qty, price, cid)


@pytest.mark.parametrize(
    ("side", "fill", "cash"),
    [
        (Side.BUY, 100.5, 10_000 - 2 * 100.5),  # a buyer pays up: 100 * (1 + 50/10000)
        (Side.SELL, 99.5, 10_000 + 2 * 99.5),  # a seller receives less: 100 * (1 - 50/10000)
    ],
)
def test_slippage_always_costs_the_trader(side: Side, fill: float, cash: float) -> None:
    b = SimulatedBroker(10_000.0, [Position("SPY", 5.0, 90.0)], slippage_bps=50, now=NOW)
    order = b.submit(intent(side, 2, 100.0, "c1"))
    assert order.filled_avg_price == pytest.approx(fill, rel=1e-12)
    assert b.cash == pytest.approx(cash, rel=1e-12)
    assert (order.status, order.filled_qty, order.submitted_at) == ("filled", 2, NOW)
    assert (order.client_order_id, order.broker_order_id) == ("c1", "sim-c1")


def test_no_slippage_fills_at_the_decision_price() -> None:
    b = SimulatedBroker(1_000.0, slippage_bps=0)
    assert b.submit(intent(Side.BUY, 1, 123.25, "c1")).filled_avg_price == 123.25


def test_adding_to_a_long_averages_the_entry_price() -> None:
    b = SimulatedBroker(10_000.0, [Position("SPY", 2.0, 100.0)])
    b.submit(intent(Side.BUY, 1, 130.0, "c1"))  # (2 * 100 + 1 * 130) / 3 = 110
    assert b.positions() == [Position("SPY", 3.0, 110.0)]
    b.submit(intent(Side.BUY, 2, 85.0, "c2"))  # (3 * 110 + 2 * 85) / 5 = 100
    assert b.positions() == [Position("SPY", 5.0, 100.0)]


def test_adding_to_a_short_averages_and_reducing_keeps_the_entry() -> None:
    b = SimulatedBroker(10_000.0, [Position("SPY", -4.0, 50.0)])
    b.submit(intent(Side.SELL, 4, 60.0, "c1"))  # (4 * 50 + 4 * 60) / 8 = 55
    assert b.positions() == [Position("SPY", -8.0, 55.0)]
    b.submit(intent(Side.BUY, 3, 40.0, "c2"))  # covering 3 leaves 5 short, still entered at 55
    assert b.positions() == [Position("SPY", -5.0, 55.0)]


def test_flipping_through_zero_enters_the_rest_at_the_fill_price() -> None:
    b = SimulatedBroker(10_000.0, [Position("SPY", 2.0, 100.0)])
    b.submit(intent(Side.SELL, 5, 120.0, "c1"))
    assert b.positions() == [Position("SPY", -3.0, 120.0)]
    assert b.cash == 10_000.0 + 5 * 120.0
    b.submit(intent(Side.BUY, 3, 110.0, "c2"))
    assert b.positions() == []


def test_a_one_share_or_fractional_long_averages_on_adding_and_keeps_its_entry_on_reducing() -> None:
    b = SimulatedBroker(10_000.0, [Position("SPY", 1.0, 100.0), Position("QQQ", 0.5, 40.0)])
    b.submit(OrderIntent("SPY", Side.BUY, 1, 110.0, "c1"))  # (1 * 100 + 1 * 110) / 2 = 105
    b.submit(OrderIntent("QQQ", Side.BUY, 0.25, 46.0, "c2"))  # (0.5 * 40 + 0.25 * 46) / 0.75 = 42
    assert b.positions() == [Position("QQQ", 0.75, 42.0), Position("SPY", 2.0, 105.0)]
    b.submit(OrderIntent("SPY", Side.SELL, 1.5, 120.0, "c3"))  # 0.5 left, still entered at 105
    assert b.positions() == [Position("QQQ", 0.75, 42.0), Position("SPY", 0.5, 105.0)]
    assert b.cash == 10_000.0 - 110.0 - 11.5 + 180.0


def test_filled_orders_are_never_open_and_recent_means_submitted_strictly_after() -> None:
    b = SimulatedBroker(10_000.0, now=NOW)
    first = b.submit(intent(Side.BUY, 1, 100.0, "c1"))
    b.now = NOW + timedelta(minutes=1)
    second = b.submit(intent(Side.BUY, 1, 100.0, "c2"))
    assert b.open_orders() == []
    assert b.recent_orders(NOW - timedelta(seconds=1)) == [first, second]
    assert b.recent_orders(NOW) == [second]  # one submitted at `after` itself is not after it
    assert b.recent_orders(NOW + timedelta(minutes=1)) == []


def test_the_same_client_id_fills_once() -> None:
    b = SimulatedBroker(1_000.0)
    first = b.submit(intent(Side.BUY, 1, 100.0, "c1"))
    assert b.submit(intent(Side.BUY, 1, 100.0, "c1")) is first
    assert (b.cash, b.positions()) == (900.0, [Position("SPY", 1.0, 100.0)])


def test_without_a_fixed_time_orders_and_the_clock_are_stamped_in_utc() -> None:
    b = SimulatedBroker(1_000.0)
    stamped = b.submit(intent(Side.BUY, 1, 100.0, "c1")).submitted_at
    assert stamped is not None
    assert stamped.utcoffset() == timedelta(0)
    now, _ = b.clock()
    assert now.utcoffset() == timedelta(0)


def test_clock_reads_the_session_calendar_at_the_fixed_time() -> None:
    assert SimulatedBroker(0.0, now=NOW).clock() == (NOW, True)  # Friday 11:00 New York
    saturday = datetime(2025, 6, 14, 15, 0, tzinfo=UTC)
    assert SimulatedBroker(0.0, now=saturday).clock() == (saturday, False)


def test_lookups_and_mark_to_market_by_hand() -> None:
    b = SimulatedBroker(1_000.0, [Position("SPY", 2.0, 100.0), Position("QQQ", -1.0, 50.0)])
    assert (b.position_qty("SPY"), b.position_qty("QQQ"), b.position_qty("IWM")) == (2.0, -1.0, 0.0)
    # SPY at 110, QQQ unpriced (its entry, 50): 1000 + 2 * 110 - 1 * 50
    assert b.mark_to_market({"SPY": 110.0}) == 1_170.0
    # its account (the balance row a simulated tick writes): equity at the entry prices
    assert b.account() == Account(cash=1_000.0, buying_power=1_000.0, equity=1_000.0 + 2 * 100.0 - 1 * 50.0)
    assert b.get_by_client_id("c1") is None
    placed = b.submit(intent(Side.BUY, 1, 100.0, "c1"))
    assert b.get_by_client_id("c1") is placed


@pytest.mark.parametrize(("cash", "buying_power"), [(-50.0, 0.0), (0.5, 0.5), (1_000.0, 1_000.0)])
def test_buying_power_is_cash_never_below_zero(cash: float, buying_power: float) -> None:
    assert SimulatedBroker(cash).account() == Account(cash=cash, buying_power=buying_power, equity=cash)


# ---- what `check` accepts and refuses, at its boundaries (prices 100, no slippage) ---------------

FORBIDDEN, INVALID = 40310000, 40010001  # Alpaca's codes: not allowed (403), validation (422)


def refusal(broker: SimulatedBroker, side: Side, qty: float) -> tuple[int | str | None, str] | None:
    """(code, message) of the refusal, or None when it filled; a refusal leaves cash and SPY as
    they were."""
    before = (broker.cash, broker.position_qty("SPY"))
    try:
        broker.submit(intent(side, qty, 100.0, f"b-{side}-{qty}"))
    except OrderRejected as e:
        assert (broker.cash, broker.position_qty("SPY")) == before
        return e.code, e.message
    return None


@pytest.mark.parametrize(
    ("cash", "held", "side", "qty", "after"),
    [
        (100.0, 0.0, Side.BUY, 1, 1.0),  # costs 100 = the buying power exactly
        (100.0, 1.0, Side.BUY, 1, 2.0),  # adding to 1 share: only the added share (100) is opened
        (50.0, 0.25, Side.BUY, 0.5, 0.75),  # adding 0.5 (50 = the buying power) to 0.25 held
        (50.0, 0.0, Side.BUY, 0.5, 0.5),  # a fractional buy is not a fractional short
        (0.0, 5.0, Side.SELL, 4.5, 0.5),  # selling part of a long opens nothing
        (0.0, 5.0, Side.SELL, 5, 0.0),  # selling exactly what is held closes it
        (0.0, -3.0, Side.BUY, 3, 0.0),  # covering exactly: nothing opened, no buying power needed
        (2_000.0, 0.0, Side.SELL, 1, -1.0),  # equity exactly $2,000: a margin account may short
    ],
    ids=[
        "bp-exact",
        "add-to-one",
        "add-fraction",
        "fractional-buy",
        "sell-part",
        "sell-all",
        "cover",
        "short-at-2000",
    ],
)
def test_check_accepts_up_to_the_boundary(
    cash: float, held: float, side: Side, qty: float, after: float
) -> None:
    b = SimulatedBroker(cash, [Position("SPY", held, 100.0)])
    assert refusal(b, side, qty) is None
    signed = qty if side is Side.BUY else -qty
    assert (b.position_qty("SPY"), b.cash) == (after, cash - signed * 100.0)


@pytest.mark.parametrize(
    ("cash", "held", "side", "qty", "refused"),
    [
        (99.99, 0.0, Side.BUY, 1, (FORBIDDEN, "insufficient buying power")),  # one cent short of 100
        (199.99, 1.0, Side.BUY, 2, (FORBIDDEN, "insufficient buying power")),  # opens 2 shares: 200
        (10.0, -3.0, Side.BUY, 3.5, (FORBIDDEN, "insufficient buying power")),  # flips: 0.5 long opened
        (1_000.0, 0.0, Side.BUY, 1.0000000001, (INVALID, "qty 1.0000000001 has more than 9 decimal places")),
        (
            100_000.0,
            0.0,
            Side.SELL,
            0.5,
            (FORBIDDEN, "qty 0.5 is fractional: fractional shares cannot be sold short"),
        ),
        (
            1_949.99,  # equity 1,949.99 + 0.5 x 100 = 1,999.99: a cash account
            0.5,
            Side.SELL,
            1.5,
            (FORBIDDEN, "insufficient qty available for order (requested: 1.5, available: 0.5)"),
        ),
    ],
    ids=["bp-one-cent-short", "opening-part", "flip", "decimals", "fractional-short", "no-margin"],
)
def test_check_refuses_with_alpacas_code_and_words(
    cash: float, held: float, side: Side, qty: float, refused: tuple[int, str]
) -> None:
    assert refusal(SimulatedBroker(cash, [Position("SPY", held, 100.0)]), side, qty) == refused


def test_positions_of_zero_are_dropped_and_one_share_is_kept() -> None:
    b = SimulatedBroker(0.0, [Position("SPY", 1.0, 100.0), Position("QQQ", 0.0, 50.0)])
    assert b.positions() == [Position("SPY", 1.0, 100.0)]
