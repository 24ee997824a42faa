"""The loopback Alpaca behaves as Alpaca documents (reference/alpaca.md), seen through alpaca-py.

Every expected figure is worked out by hand from the documented rule next to it, not read back
from the fake.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest
from pydantic import ValidationError

from tests.fake_alpaca import KEY, SECRET, FakeAlpaca, Policy


def client(fake: FakeAlpaca) -> Any:
    """alpaca-py's client; typed Any, as its answers are unions with dict that mypy cannot narrow."""
    c = TradingClient(KEY, SECRET, paper=True, url_override=fake.url)
    c._retry = 0  # the fake's answers, not alpaca-py's 3 s retries
    return c


def order(c: Any, symbol: str, side: str, qty: float, cid: str | None = None) -> Any:
    return c.submit_order(
        MarketOrderRequest(
            symbol=symbol, qty=qty, side=OrderSide(side), time_in_force=TimeInForce.DAY, client_order_id=cid
        )
    )


def num(text: str) -> Any:
    """A decimal string of the answer as a Decimal (typed Any so it compares with int literals)."""
    return Decimal(text)


def refused(c: Any, symbol: str, side: str, qty: float) -> tuple[int, int, str]:
    with pytest.raises(APIError) as caught:
        order(c, symbol, side, qty)
    return caught.value.status_code, caught.value.code, caught.value.message


def test_an_order_is_accepted_by_the_post_and_filled_by_the_next_request(fake: FakeAlpaca) -> None:
    c = client(fake)
    placed = order(c, "SPY", "buy", 2, "cid-1")
    assert (placed.status.value, placed.filled_qty, placed.filled_avg_price) == ("accepted", "0", None)
    later = c.get_order_by_id(placed.id)
    assert (later.status.value, num(later.filled_qty), num(later.filled_avg_price)) == (
        "filled",
        2,
        100,
    )
    assert c.get_order_by_client_id("cid-1").id == placed.id
    assert Decimal(c.get_account().cash) == 100_000 - 2 * 100


def test_after_n_ticks_then_filled_on_the_nth_request_and_not_before(fake: FakeAlpaca) -> None:
    fake.set_policy(3)
    c = client(fake)
    placed = order(c, "SPY", "buy", 1)
    seen = [c.get_order_by_id(placed.id).status.value for _ in range(3)]
    assert seen == ["accepted", "accepted", "filled"]


def test_partial_fill_then_rest_later_with_the_average_of_both_prices(fake: FakeAlpaca) -> None:
    fake.set_policy(Policy(after=1, partial=Decimal("0.3")))
    c = client(fake)
    placed = order(c, "SPY", "buy", 10)
    fake.prices["SPY"] = Decimal(110)  # the first fill (3 of 10) happens on the next request, at 110
    first = c.get_order_by_id(placed.id)
    assert (first.status.value, num(first.filled_qty)) == ("partially_filled", 3)
    fake.prices["SPY"] = Decimal(120)  # the other 7 on the one after, at 120
    done = c.get_order_by_id(placed.id)
    assert (done.status.value, num(done.filled_qty)) == ("filled", 10)
    assert Decimal(done.filled_avg_price) == (3 * 110 + 7 * 120) / Decimal(10)  # 117
    assert Decimal(c.get_open_position("SPY").avg_entry_price) == 117


def test_partial_fill_that_never_completes(fake: FakeAlpaca) -> None:
    fake.set_policy(Policy(after=1, partial=Decimal("0.5"), rest=False))
    c = client(fake)
    placed = order(c, "SPY", "buy", 4)
    for _ in range(5):
        got = c.get_order_by_id(placed.id)
    assert (got.status.value, num(got.filled_qty)) == ("partially_filled", 2)


def test_manual_policy_then_only_an_explicit_fill_fills_and_per_symbol_policy_wins(fake: FakeAlpaca) -> None:
    fake.set_policy("never")
    fake.set_policy("instant", symbol="QQQ")
    c = client(fake)
    spy, qqq = order(c, "SPY", "buy", 3, "s"), order(c, "QQQ", "buy", 1, "q")
    assert qqq.status.value == "filled"  # inside the POST
    for _ in range(3):
        assert c.get_order_by_id(spy.id).status.value == "accepted"
    fake.fill("s", qty=1, price=Decimal(90))
    assert (c.get_order_by_id(spy.id).status.value, c.get_order_by_id(spy.id).filled_qty) == (
        "partially_filled",
        "1",
    )
    fake.fill("SPY", price=Decimal(93))
    done = c.get_order_by_id(spy.id)
    assert (done.status.value, Decimal(done.filled_avg_price)) == ("filled", Decimal(1 * 90 + 2 * 93) / 3)


def test_a_closed_market_queues_the_order_until_it_opens(fake: FakeAlpaca) -> None:
    fake.is_open = False
    c = client(fake)
    assert c.get_clock().is_open is False
    placed = order(c, "SPY", "buy", 1)
    assert c.get_order_by_id(placed.id).status.value == "accepted"
    fake.is_open = True
    assert c.get_order_by_id(placed.id).status.value == "filled"


def test_selling_more_than_held_then_403_insufficient_qty_on_a_long_only_account(fake: FakeAlpaca) -> None:
    c = client(fake)
    order(c, "SPY", "buy", 2)
    c.get_account()  # the buy fills
    status, code, message = refused(c, "SPY", "sell", 3)
    assert (status, code) == (403, 40310000)
    assert message == "insufficient qty available for order (requested: 3, available: 2)"
    assert refused(c, "QQQ", "sell", 1)[2].startswith("insufficient qty available")
    assert fake.orders_accepted == 1


def test_shares_held_for_an_open_sell_are_not_available_to_another(fake: FakeAlpaca) -> None:
    fake.set_policy("manual")
    fake.positions["SPY"] = (Decimal(5), Decimal(100))
    c = client(fake)
    order(c, "SPY", "sell", 3)
    assert refused(c, "SPY", "sell", 3)[2] == (
        "insufficient qty available for order (requested: 3, available: 2)"
    )
    assert c.get_open_position("SPY").qty_available == "2"


def test_shorting_enabled_then_a_sell_past_zero_opens_a_short() -> None:
    with FakeAlpaca(shorting=True) as fake:
        c = client(fake)
        order(c, "SPY", "sell", 2)
        held = c.get_open_position("SPY")
        assert (held.side.value, num(held.qty), num(held.avg_entry_price)) == ("short", -2, 100)
        assert c.get_account().shorting_enabled is True


@pytest.mark.parametrize(
    ("multiplier", "buying_power"),
    [
        (1, 100_000 - 300 * 100),  # cash account: cash less what is spent
        (2, 2 * 100_000 - 300 * 100),  # Reg T: 2 x equity less the long market value
        (4, 4 * 100_000 - 300 * 100),
    ],
)
def test_buying_power_comes_from_the_multiplier_not_cash(multiplier: int, buying_power: int) -> None:
    with FakeAlpaca(multiplier=multiplier) as fake:
        c = client(fake)
        order(c, "SPY", "buy", 300)
        account = c.get_account()
        assert (num(account.cash), num(account.equity)) == (70_000, 100_000)
        assert Decimal(account.buying_power) == buying_power
        assert account.multiplier == str(multiplier)


def test_buying_power_then_403_above_it_and_open_buys_reserve_it(fake: FakeAlpaca) -> None:
    fake.set_policy("manual")
    c = client(fake)
    order(c, "SPY", "buy", 1500)  # 150k of the 200k a 2x account may buy
    status, code, message = refused(c, "QQQ", "buy", 600)  # 60k > 50k left
    assert (status, code, message) == (403, 40310000, "insufficient buying power")
    order(c, "QQQ", "buy", 500)  # exactly 50k
    assert Decimal(c.get_account().buying_power) == 0


def test_an_opposite_order_working_then_wash_trade_refused(fake: FakeAlpaca) -> None:
    fake.set_policy("manual")
    fake.positions["SPY"] = (Decimal(5), Decimal(100))
    c = client(fake)
    order(c, "SPY", "buy", 1)
    assert refused(c, "SPY", "sell", 1) == (
        403,
        40310000,
        "potential wash trade detected. use complex orders",
    )
    order(c, "QQQ", "buy", 1)  # another symbol is not a wash trade
    fake.fill()
    order(c, "SPY", "sell", 1)  # nothing opposite is working any more


def test_pattern_day_trader_then_a_fourth_day_trade_refused_below_25k() -> None:
    with FakeAlpaca(cash=20_000, fill="instant") as fake:
        c = client(fake)
        for n in range(3):  # three round trips today
            order(c, "SPY", "buy", 1)
            order(c, "SPY", "sell", 1)
            assert c.get_account().daytrade_count == n + 1
        order(c, "SPY", "buy", 1)
        assert refused(c, "SPY", "sell", 1) == (
            403,
            40310100,
            "trade denied due to pattern day trading protection",
        )
        order(c, "SPY", "buy", 1)  # adding is not a day trade


def test_pattern_day_trader_rule_does_not_bind_from_25k(fake: FakeAlpaca) -> None:
    fake.set_policy("instant")
    fake.daytrade_count = 3
    fake.opened_today.add("SPY")
    fake.positions["SPY"] = (Decimal(1), Decimal(100))
    order(client(fake), "SPY", "sell", 1)  # equity 100k
    assert fake.daytrade_count == 4


def test_order_list_filters_by_status_symbols_after_and_limit(fake: FakeAlpaca) -> None:
    fake.set_policy("manual")
    fake.set_policy("instant", symbol="IWM")
    c = client(fake)
    a = order(c, "SPY", "buy", 1)
    b = order(c, "QQQ", "buy", 1)
    i = str(order(c, "IWM", "buy", 1).id)  # filled inside the POST: closed
    d = order(c, "SPY", "buy", 1)

    def ids(**kw: Any) -> list[str]:
        return [str(o.id) for o in c.get_orders(GetOrdersRequest(**kw))]

    assert ids() == [str(d.id), str(b.id), str(a.id)]  # open, newest first
    assert ids(status=QueryOrderStatus.OPEN, symbols=["SPY"], nested=True) == [str(d.id), str(a.id)]
    assert ids(status=QueryOrderStatus.ALL, limit=2) == [str(d.id), i]
    assert ids(status=QueryOrderStatus.CLOSED) == [i]
    assert ids(status=QueryOrderStatus.ALL, after=b.submitted_at) == [str(d.id), i]
    assert ids(after=datetime(2100, 1, 1, tzinfo=UTC)) == []


def test_cancel_goes_pending_then_canceled_and_a_filled_order_cannot_be(fake: FakeAlpaca) -> None:
    fake.set_policy("manual")
    fake.cancel_after = 2
    c = client(fake)
    working, done = order(c, "SPY", "buy", 1), order(c, "QQQ", "buy", 1, "q")
    fake.fill("q")
    c.cancel_order_by_id(working.id)
    assert c.get_order_by_id(working.id).status.value == "pending_cancel"
    assert c.get_order_by_id(working.id).status.value == "canceled"
    with pytest.raises(APIError) as caught:
        c.cancel_order_by_id(done.id)
    assert (caught.value.status_code, caught.value.code) == (422, 42210000)
    with pytest.raises(APIError) as missing:
        c.get_order_by_id("00000000-0000-4000-8000-000000000000")
    assert missing.value.status_code == 404


def test_positions_average_the_entry_price_when_adding_by_hand(fake: FakeAlpaca) -> None:
    fake.set_policy("instant")
    c = client(fake)
    order(c, "SPY", "buy", 2)  # 2 at 100
    fake.prices["SPY"] = Decimal(130)
    order(c, "SPY", "buy", 1)  # 1 at 130: (200 + 130) / 3 = 110
    fake.prices["SPY"] = Decimal(150)
    order(c, "SPY", "sell", 1)  # selling keeps the entry price
    held = c.get_open_position("SPY")
    assert (num(held.qty), num(held.avg_entry_price)) == (2, 110)
    assert (num(held.unrealized_pl), num(held.market_value)) == (2 * (150 - 110), 300)
    with pytest.raises(APIError) as caught:
        c.get_open_position("QQQ")
    assert (caught.value.status_code, caught.value.message) == (404, "position does not exist")


def test_account_fields_alpaca_documents(fake: FakeAlpaca) -> None:
    a = client(fake).get_account()
    assert (a.account_number, a.status.value, a.shorting_enabled, a.multiplier) == (
        "PA3FAKE0001",
        "ACTIVE",
        False,
        "2",
    )
    assert (a.daytrade_count, a.pattern_day_trader) == (0, False)
    assert (num(a.cash), num(a.equity), num(a.buying_power)) == (100_000, 100_000, 200_000)


def test_429_carries_retry_after_and_a_bad_body_is_400(fake: FakeAlpaca) -> None:
    fake.fail("GET /v2/account", 429)
    got = requests.get(fake.url + "/v2/account", headers=HEADERS, timeout=5)
    assert (got.status_code, got.headers["Retry-After"], got.json()["code"]) == (429, "1", 42910000)
    bad = requests.post(fake.url + "/v2/orders", data="{not json", headers=HEADERS, timeout=5)
    assert (bad.status_code, bad.json()["code"]) == (400, 40010000)


HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


@pytest.mark.parametrize("kind", ["empty", "null", "redirect"])
def test_odd_answers_without_an_object_then_alpaca_py_cannot_parse_them(fake: FakeAlpaca, kind: Any) -> None:
    fake.odd("GET /v2/account", kind)
    with pytest.raises(TypeError, match="must be a mapping"):
        client(fake).get_account()
    assert client(fake).get_account().status.value == "ACTIVE"  # once only


def test_odd_answer_shapes_on_the_wire(fake: FakeAlpaca) -> None:
    for kind in ("empty", "null", "redirect"):
        fake.odd("GET /v2/clock", kind)
    answers = [
        requests.get(fake.url + "/v2/clock", headers=HEADERS, timeout=5, allow_redirects=False)
        for _ in range(3)
    ]
    assert [(a.status_code, a.text) for a in answers] == [(200, ""), (200, "null"), (302, "")]
    assert answers[2].headers["Location"] == "https://paper-api.alpaca.markets/v2/account"


def test_unknown_fields_are_ignored_and_an_unknown_exchange_is_not(fake: FakeAlpaca) -> None:
    fake.set_policy("instant")
    c = client(fake)
    fake.odd("POST /v2/orders", "unknown_fields")
    assert order(c, "SPY", "buy", 1).status.value == "filled"
    fake.odd("GET /v2/positions", "unknown_exchange")
    with pytest.raises(ValidationError, match="exchange"):
        c.get_all_positions()
    assert [p.exchange.value for p in c.get_all_positions()] == ["ARCA"]
