"""Alpaca's numbers read at the boundary: a missing one and an unreadable one are different
outages, each named with the field (and, when unreadable, the start of what came)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strategy_engine.brokers import alpaca_parse as parse
from strategy_engine.core.errors import BrokerUnavailable
from strategy_engine.core.models import Account, Order, Position, Side

GOOD = {"cash": "1000.5", "buying_power": "2001", "equity": "1000.5", "account_number": "PA1"}


def test_account_money_strings_then_floats() -> None:
    assert parse.account(GOOD) == Account(
        cash=1000.5, buying_power=2001.0, equity=1000.5, account_number="PA1"
    )


@pytest.mark.parametrize("missing", [None, ""])
def test_a_missing_number_then_unavailable_saying_it_is_missing(missing: str | None) -> None:
    with pytest.raises(BrokerUnavailable, match=r"^Alpaca account has no cash$"):
        parse.account({**GOOD, "cash": missing})


@pytest.mark.parametrize(
    ("value", "shown"),
    [("abc", "'abc'"), ("NaN", "'NaN'"), ("inf", "'inf'"), ("x" * 50, repr("x" * 40))],
)
def test_an_unreadable_number_then_unavailable_showing_its_first_40_characters(
    value: str, shown: str
) -> None:
    with pytest.raises(BrokerUnavailable) as caught:
        parse.account({**GOOD, "equity": value})
    assert str(caught.value) == f"Alpaca account has an unreadable equity: {shown}"


# Each field the engine reads, its default, and the exact words of each refusal (issue 11: the
# mutation run of `alpaca_parse` showed messages and defaults no test pinned down).

ORDER = {
    "id": "b-1",
    "client_order_id": "c-1",
    "symbol": "SPY",
    "side": "buy",
    "qty": "3",
    "status": "filled",
    "filled_qty": "3",
    "filled_avg_price": "101.5",
    "submitted_at": "2025-06-13T15:00:01.5Z",
}


def _refused(fn: Any, raw: Any) -> str:
    with pytest.raises(BrokerUnavailable) as caught:
        fn(raw)
    return str(caught.value)


def test_an_order_read_by_its_fields() -> None:
    assert parse.order(ORDER) == Order(
        client_order_id="c-1", broker_order_id="b-1", symbol="SPY", side=Side.BUY, qty=3.0,
        status="filled", filled_qty=3.0, filled_avg_price=101.5,
        submitted_at=datetime(2025, 6, 13, 15, 0, 1, 500000, tzinfo=UTC),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"id": None}, "Alpaca order has no id"),
        ({"id": 7}, "Alpaca order has no id"),
        ({"side": "short"}, "Alpaca order b-1 has side 'short' (not a simple order)"),
        ({"side": None}, "Alpaca order b-1 has side None (not a simple order)"),
        ({"status": ""}, "Alpaca order b-1 has no status"),
        ({"client_order_id": None}, "Alpaca order b-1 has no client_order_id"),
        ({"symbol": ""}, "Alpaca order b-1 has no symbol"),
        ({"qty": None}, "Alpaca order b-1 has no qty"),
        ({"qty": "1e999"}, "Alpaca order b-1 has an unreadable qty: '1e999'"),
        ({"filled_qty": "x"}, "Alpaca order b-1 has an unreadable filled_qty: 'x'"),
        ({"filled_avg_price": "nan"}, "Alpaca order b-1 has an unreadable filled_avg_price: 'nan'"),
    ],
)
def test_an_order_missing_a_field_it_needs_is_refused_by_name(change: dict[str, Any], said: str) -> None:
    assert _refused(parse.order, {**ORDER, **change}) == said


@pytest.mark.parametrize("raw", [[ORDER], "order", None])
def test_an_order_that_is_not_an_object_is_refused(raw: Any) -> None:
    assert _refused(parse.order, raw) == f"unexpected answer from Alpaca for an order: {type(raw).__name__}"


@pytest.mark.parametrize(
    ("change", "filled", "price"),
    [
        ({"filled_qty": None, "filled_avg_price": None}, 0.0, None),  # accepted, nothing filled
        ({"filled_qty": "", "filled_avg_price": ""}, 0.0, None),
        ({"filled_qty": "0", "filled_avg_price": "0"}, 0.0, None),
        ({"filled_qty": "0", "filled_avg_price": "99"}, 0.0, None),  # no fill, no price
        ({"filled_qty": "2", "filled_avg_price": "0"}, 2.0, None),  # a fill without its price
        ({"filled_qty": "2", "filled_avg_price": None}, 2.0, None),
        ({"filled_qty": "1.5", "filled_avg_price": "100.25"}, 1.5, 100.25),
    ],
)
def test_an_orders_fill_defaults_to_none(change: dict[str, Any], filled: float, price: float | None) -> None:
    o = parse.order({**ORDER, **change})
    assert (o.filled_qty, o.filled_avg_price) == (filled, price)


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("2025-06-13T15:00:01Z", datetime(2025, 6, 13, 15, 0, 1, tzinfo=UTC)),
        ("2024-03-22T20:40:50.915476843Z", datetime(2024, 3, 22, 20, 40, 50, 915476, tzinfo=UTC)),  # Alpaca's
        ("2025-06-13T11:00:01-04:00", datetime(2025, 6, 13, 15, 0, 1, tzinfo=UTC)),
        ("2025-06-13T15:00:01", datetime(2025, 6, 13, 15, 0, 1, tzinfo=UTC)),  # no zone: UTC
        ("", None),
        (None, None),
        (1749826801, None),
    ],
)
def test_an_orders_submitted_at_is_read_in_utc(
    sent: Any, read: datetime | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In UTC whatever the host's zone (New York here): a time without a zone is UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        o = parse.order({**ORDER, "submitted_at": sent})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert o.submitted_at == read
    assert read is None or o.submitted_at.utcoffset() == timedelta(0)  # type: ignore[union-attr]


def test_an_unreadable_time_is_logged_with_its_first_40_characters(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=parse.__name__):
        assert parse.order({**ORDER, "submitted_at": "yesterday" + "!" * 50}).submitted_at is None
    assert caplog.messages == [f"Alpaca sent an unreadable time {('yesterday' + '!' * 31)!r}: ignored"]


def test_an_unknown_status_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=parse.__name__):
        assert parse.order({**ORDER, "status": "parked"}).status == "parked"
        assert parse.order({**ORDER, "status": "pending_review"}).status == "pending_review"
    assert caplog.messages == ["Alpaca order b-1 has status 'parked', unknown here: refreshed until final"]


def test_an_order_list_skips_what_it_cannot_read_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    second = {**ORDER, "id": "b-2", "client_order_id": "c-2"}
    with caplog.at_level(logging.WARNING, logger=parse.__name__):
        got = parse.orders([ORDER, {**ORDER, "side": None}, "leg", second])
    assert [o.broker_order_id for o in got] == ["b-1", "b-2"]
    assert caplog.messages == [
        "skipped an order the engine cannot read: Alpaca order b-1 has side None (not a simple order)",
        "skipped an order the engine cannot read: unexpected answer from Alpaca for an order: str",
    ]
    assert parse.orders([]) == []


@pytest.mark.parametrize("raw", [ORDER, None, "[]"])
def test_an_order_list_that_is_not_a_list_is_refused(raw: Any) -> None:
    assert _refused(parse.orders, raw) == f"unexpected answer from Alpaca for orders: {type(raw).__name__}"


POSITION = {"symbol": "SPY", "qty": "10", "side": "long", "avg_entry_price": "99.5"}


@pytest.mark.parametrize(
    ("change", "qty"),
    [
        ({}, 10.0),
        ({"qty": "-4", "side": "short"}, -4.0),
        ({"qty": "4", "side": "short"}, -4.0),  # a short sent positive is made negative
        ({"qty": "-4", "side": "long"}, -4.0),  # the sign wins over a contradicting side
        ({"qty": "0.5", "side": "long"}, 0.5),
        ({"qty": "0.5", "side": "short"}, -0.5),  # a fractional short sent positive too
    ],
)
def test_a_positions_quantity_is_signed(
    change: dict[str, Any], qty: float, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=parse.__name__):
        assert parse.positions([{**POSITION, **change}]) == [Position("SPY", qty, 99.5)]
    assert caplog.messages == []  # long and short are the sides Alpaca documents: nothing to say


def test_a_position_with_an_unknown_side_keeps_its_sign_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=parse.__name__):
        got = parse.positions([{**POSITION, "qty": "-2", "side": "flat"}, {**POSITION, "symbol": "QQQ",
                                "side": None}])  # fmt: skip
    assert got == [Position("QQQ", 10.0, 99.5), Position("SPY", -2.0, 99.5)]  # by symbol
    assert caplog.messages == [
        "Alpaca position SPY has side 'flat': the sign of qty is used",
        "Alpaca position QQQ has side None: the sign of qty is used",
    ]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"symbol": None}, "Alpaca position has no symbol"),
        ({"qty": ""}, "Alpaca position SPY has no qty"),
        ({"qty": "ten"}, "Alpaca position SPY has an unreadable qty: 'ten'"),
        ({"avg_entry_price": "-inf"}, "Alpaca position SPY has an unreadable avg_entry_price: '-inf'"),
    ],
)
def test_a_position_missing_a_field_it_needs_is_refused_by_name(change: dict[str, Any], said: str) -> None:
    assert _refused(parse.positions, [{**POSITION, **change}]) == said


@pytest.mark.parametrize("price", [None, ""])
def test_a_position_without_its_entry_price_is_read_at_zero(price: str | None) -> None:
    assert parse.positions([{**POSITION, "avg_entry_price": price}]) == [Position("SPY", 10.0, 0.0)]


@pytest.mark.parametrize(("raw", "said"), [
    ({"positions": []}, "unexpected answer from Alpaca for positions: dict"),
    (["SPY"], "unexpected answer from Alpaca for a position: str"),
])  # fmt: skip
def test_positions_that_are_not_a_list_of_objects_are_refused(raw: Any, said: str) -> None:
    assert _refused(parse.positions, raw) == said


@pytest.mark.parametrize(
    ("change", "number"), [({}, "PA1"), ({"account_number": None}, None), ({"account_number": ""}, None),
                           ({"account_number": 12}, "12")],
)  # fmt: skip
def test_the_account_number_is_text_or_none(change: dict[str, Any], number: str | None) -> None:
    assert parse.account({**GOOD, **change}).account_number == number


@pytest.mark.parametrize("field", ["cash", "buying_power", "equity"])
def test_every_account_figure_is_required(field: str) -> None:
    rest = {k: v for k, v in GOOD.items() if k != field}
    assert _refused(parse.account, rest) == f"Alpaca account has no {field}"


@pytest.mark.parametrize("raw", [[GOOD], None])
def test_an_account_that_is_not_an_object_is_refused(raw: Any) -> None:
    assert (
        _refused(parse.account, raw) == f"unexpected answer from Alpaca for the account: {type(raw).__name__}"
    )


@pytest.mark.parametrize(
    ("raw", "read"),
    [
        ({"timestamp": "2025-06-13T11:00:00.123-04:00", "is_open": True},
         (datetime(2025, 6, 13, 15, 0, 0, 123000, tzinfo=UTC), True)),
        ({"timestamp": "2025-06-13T23:00:00Z", "is_open": False}, (datetime(2025, 6, 13, 23, tzinfo=UTC), False)),
    ],
)  # fmt: skip
def test_the_clock_read_in_utc(raw: dict[str, Any], read: tuple[datetime, bool]) -> None:
    assert parse.clock(raw) == read


@pytest.mark.parametrize(
    "raw",
    [
        {"timestamp": "2025-06-13T15:00:00Z", "is_open": "true"},  # a string is not a bool
        {"timestamp": "2025-06-13T15:00:00Z", "is_open": 1},
        {"timestamp": "2025-06-13T15:00:00Z"},
        {"timestamp": "soon", "is_open": True},
        {"is_open": True},
    ],
)
def test_a_clock_without_a_readable_time_and_is_open_is_refused(raw: dict[str, Any]) -> None:
    assert _refused(parse.clock, raw) == "Alpaca clock has no timestamp or is_open"


def test_a_clock_that_is_not_an_object_is_refused() -> None:
    assert _refused(parse.clock, ["open"]) == "unexpected answer from Alpaca for the clock: list"
