"""Alpaca's answers translated once, at the boundary, and read tolerantly (issue 12, items 7-8).

The real alpaca-py client against the loopback Alpaca: odd bodies and redirects are outages
(retried, then `BrokerUnavailable`), a refusal after a transient failure is checked against the
broker before it is called a rejection, `Retry-After` sets the pause within the budget, and a
position or order with values alpaca-py's models do not know is still read.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest

from strategy_engine import engine
from strategy_engine.brokers.alpaca import _details
from strategy_engine.core.errors import BrokerUnavailable, OrderRejected
from strategy_engine.core.models import OrderIntent, Side
from strategy_engine.store import Session
from tests.fake_alpaca import FakeAlpaca, faults
from tests.fake_alpaca.faults import Odd
from tests.test_alpaca_broker import broker
from tests.test_alpaca_engine import deps, setup, trades
from tests.test_exactly_once import T

POST = "POST /v2/orders"
ACCOUNT = "GET /v2/account"
POSITIONS = "GET /v2/positions"
LOOKUP = "GET /v2/orders:by_client_order_id"


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(fill="instant") as server:
        yield server


def intent(symbol: str = "SPY", qty: float = 1.0) -> OrderIntent:
    return OrderIntent(symbol, Side.BUY, qty, 100.0, "se-answers-0001")


@pytest.mark.parametrize("kind", ["empty", "null", "redirect"])
def test_an_empty_null_or_redirect_answer_is_retried_as_an_outage(fake: FakeAlpaca, kind: Odd) -> None:
    fake.odd(ACCOUNT, kind)
    assert broker(fake.url).account().cash == 100_000.0
    assert fake.requests[ACCOUNT] == 2


def test_a_redirect_is_not_followed_so_the_keys_never_reach_its_target(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3xx is a proxy's or a moved host's, never Alpaca's: an outage named as a redirect,
    retried, never followed. Following it would send the key headers (APCA-API-KEY-ID and
    APCA-API-SECRET-KEY; requests strips only Authorization on a redirect to another host)
    wherever it points: here a second loopback server, which must see nothing."""
    with FakeAlpaca() as elsewhere:
        monkeypatch.setattr(faults, "REDIRECT_TO", elsewhere.url)
        fake.odd(ACCOUNT, "redirect", times=2)
        with pytest.raises(
            BrokerUnavailable, match=r"still failing after .*: HTTP 302 redirect from Alpaca's"
        ):
            broker(fake.url, attempts=2).account()
        assert fake.requests[ACCOUNT] == 2
        assert sum(elsewhere.requests.values()) == 0


@pytest.mark.parametrize("kind", ["empty", "null", "redirect"])
def test_a_persisting_odd_answer_fails_the_minute_whole(
    session: Session, fake: FakeAlpaca, kind: Odd
) -> None:
    setup(session)
    fake.odd(POSITIONS, kind, times=10_000)
    result = engine.tick(session, T, deps=deps(fake))
    assert result.status == "failed"
    assert "still failing" in (result.strategies[0].error or "")
    assert fake.requests[POST] == 0
    assert session.fetchone("select count(*) from strategy_logs") == (0,)


def test_a_refusal_after_a_timeout_is_looked_up_and_the_placed_order_adopted(fake: FakeAlpaca) -> None:
    fake.slow(POST, 1.0)  # the first POST lands, its answer comes after the client's timeout
    fake.fail(POST, 403, body={"code": 40310000, "message": "insufficient qty available for order"})
    order = broker(fake.url, timeout=0.3, budget=3.0).submit(intent())
    placed = fake.by_client_id("se-answers-0001")
    assert placed is not None
    assert (order.broker_order_id, order.status) == (placed["id"], "filled")
    assert (fake.requests[POST], fake.requests[LOOKUP], fake.orders_accepted) == (2, 1, 1)


def test_a_refusal_after_an_outage_with_no_order_at_the_broker_is_a_rejection(fake: FakeAlpaca) -> None:
    fake.fail(POST, 503)
    fake.fail(POST, 403, body={"code": 40310000, "message": "insufficient buying power"})
    with pytest.raises(OrderRejected, match="insufficient buying power"):
        broker(fake.url).submit(intent())
    assert (fake.requests[POST], fake.requests[LOOKUP], fake.orders_accepted) == (2, 1, 0)


def test_retry_after_sets_the_pause_when_it_fits_the_budget(
    fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail(ACCOUNT, 429, retry_after="1")
    with caplog.at_level(logging.WARNING, logger="strategy_engine.brokers.alpaca"):
        broker(fake.url, timeout=0.3, budget=3.0).account()
    (record,) = [r for r in caplog.records if "retrying in" in r.getMessage()]
    pause = float(record.getMessage().rsplit("retrying in ", 1)[1].rstrip("s"))
    assert pause >= 1.0  # the pause the server asked for, not the backoff's 0.25 s


def test_retry_after_past_the_budget_gives_up_at_once(fake: FakeAlpaca) -> None:
    fake.fail(ACCOUNT, 429, retry_after="30", times=2)
    with pytest.raises(BrokerUnavailable, match="429"):
        broker(fake.url, timeout=0.3, budget=1.5).account()
    assert fake.requests[ACCOUNT] == 1  # no attempt that would end past the budget


@pytest.mark.parametrize("kind", ["unknown_exchange", "unknown_fields"])
def test_unknown_values_in_positions_and_orders_are_read_by_the_fields_needed(
    fake: FakeAlpaca, kind: Odd
) -> None:
    b = broker(fake.url)
    b.submit(intent(qty=3))
    fake.odd(POSITIONS, kind)
    fake.odd(LOOKUP, kind)
    (position,) = b.positions()
    assert (position.symbol, position.qty, position.avg_entry_price) == ("SPY", 3.0, 100.0)
    order = b.get_by_client_id("se-answers-0001")
    assert order is not None and (order.status, order.filled_qty) == ("filled", 3.0)


def test_an_unknown_exchange_never_halts_the_account(session: Session, fake: FakeAlpaca) -> None:
    setup(session)
    fake.place({"symbol": "TSLA", "side": "buy", "qty": "2", "client_order_id": "elsewhere"})
    fake.odd(POSITIONS, "unknown_exchange", times=10_000)
    result = engine.tick(session, T, deps=deps(fake))
    assert (result.status, result.orders) == ("ok", 3)
    assert session.fetchall("select symbol, qty::float8 from broker_positions") == [("TSLA", 2.0)]
    assert len(trades(session)) == 3


@pytest.mark.parametrize(
    ("fault", "said"),
    [("empty", "empty answer from Alpaca"), ("html", "unreadable answer from Alpaca: JSONDecodeError")],
)
def test_an_answer_that_stays_unreadable_is_an_outage_saying_so_and_for_how_long(
    fake: FakeAlpaca, fault: str, said: str
) -> None:
    """An empty 200, or a proxy's HTML page answered 200: retried, then an outage naming the
    call, how long it kept failing (no longer than it took) and why."""
    if fault == "empty":
        fake.odd(ACCOUNT, "empty", times=2)
    else:
        fake.fail(ACCOUNT, 200, times=2, body="<html>a proxy's page</html>")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        broker(fake.url, attempts=2).account()
    took = time.monotonic() - started
    found = re.fullmatch(
        rf"Alpaca GET /v2/account still failing after (\d+\.\d)s: {re.escape(said)}", str(caught.value)
    )
    assert found is not None, str(caught.value)
    assert 0.0 <= float(found[1]) <= took + 0.05
    assert fake.requests[ACCOUNT] == 2


@pytest.mark.parametrize("status", [300, 301, 307, 399])
def test_every_3xx_is_an_outage_named_as_a_redirect(fake: FakeAlpaca, status: int) -> None:
    fake.fail(ACCOUNT, status, times=2, body={"cash": "1", "buying_power": "1", "equity": "1"})
    with pytest.raises(
        BrokerUnavailable, match=rf"still failing after .*: HTTP {status} redirect from Alpaca's"
    ):
        broker(fake.url, attempts=2).account()  # a body that reads as an account is not read
    assert fake.requests[ACCOUNT] == 2


def test_a_400_is_a_refusal_of_the_order_not_an_outage_to_retry(fake: FakeAlpaca) -> None:
    fake.fail(POST, 400, body={"code": 40010000, "message": "request is not valid"})
    with pytest.raises(OrderRejected, match="request is not valid"):
        broker(fake.url).submit(OrderIntent("SPY", Side.BUY, 1.0, 100.0, "se-000000000000000000000400"))
    assert (fake.requests[POST], fake.orders_accepted) == (1, 0)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"code": 40010001, "message": "qty must be > 0"}', (40010001, "qty must be > 0")),
        ('{"code": 40310000}', (40310000, '{"code": 40310000}')),  # no message: the body says it
        ("<html>502 Bad Gateway</html>", (None, "<html>502 Bad Gateway</html>")),
        ("x" * 300, (None, "x" * 200)),  # a long page is cut to its first 200 characters
        ("", (None, "no message")),  # never an empty explanation
    ],
)
def test_an_error_body_gives_alpacas_code_and_message_or_the_start_of_the_page(
    body: str, expected: tuple[int | None, str]
) -> None:
    assert _details(body, ()) == expected
