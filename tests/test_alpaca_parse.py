"""Alpaca's numbers read at the boundary: a missing one and an unreadable one are different
outages, each named with the field (and, when unreadable, the start of what came)."""

from __future__ import annotations

import pytest

from strategy_engine.brokers import alpaca_parse as parse
from strategy_engine.core.errors import BrokerUnavailable
from strategy_engine.core.models import Account

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
