"""The Alpaca adapter against the loopback server, through the real alpaca-py client.

Nothing in the broker path is mocked: every test sends real HTTP to `FakeAlpaca`. Timeouts and
backoffs are tiny so that outages, retries and slow answers take well under a second each.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from strategy_engine.brokers.alpaca import LIST_LIMIT, AlpacaPaperBroker, BrokerAuthError
from strategy_engine.brokers.alpaca_http import TimeoutAdapter
from strategy_engine.core.errors import BrokerUnavailable, LiveTradingRefused, OrderRejected
from strategy_engine.core.models import OrderIntent, Side
from strategy_engine.settings import PAPER_BASE_URL, Settings
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca

POST = "POST /v2/orders"
BY_CID = "GET /v2/orders:by_client_order_id"


def broker(
    url: str,
    *,
    key: str = KEY,
    secret: str = SECRET,
    timeout: float = 0.3,
    budget: float = 1.5,
    attempts: int = 6,
) -> AlpacaPaperBroker:
    return AlpacaPaperBroker(
        SecretStr(key),
        SecretStr(secret),
        url,
        timeout_seconds=timeout,
        retry_budget_seconds=budget,
        max_attempts=attempts,
        backoff_seconds=0.01,
        backoff_max_seconds=0.05,
    )


def intent(cid: str = "se-000000000000000000000001", symbol: str = "SPY", qty: float = 1.0) -> OrderIntent:
    return OrderIntent(symbol, Side.BUY, qty, 100.0, cid)


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every DNS lookup or connect attempted from now on (refused, and recorded)."""
    seen: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        seen.append(args)
        raise OSError("network use in a test that must make none")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return seen


LIVE_SPELLINGS = [
    "https://api.alpaca.markets",
    "https://API.ALPACA.MARKETS",
    "https://Api.Alpaca.Markets/",
    "https://api.alpaca.markets/v2",
    "https://api.alpaca.markets:443",
    "https://api.alpaca.markets:8443/",
    "http://api.alpaca.markets",
    "https://api.alpaca.markets.",
    "  https://api.alpaca.markets/  ",
    "https://api.alpaca.markets\t",
    "api.alpaca.markets",
    "//api.alpaca.markets",
    "https://key:secret@api.alpaca.markets",
    "https://paper-api.alpaca.markets@api.alpaca.markets",
    "https://api.alpaca.markets#paper-api.alpaca.markets",
    "https://api.alpaca.markets?host=paper-api.alpaca.markets",
    "https://paper-api.alpaca.markets.api.alpaca.markets",
    "HTTPS://API.alpaca.markets:443/v2/account",
]


@pytest.mark.parametrize("url", LIVE_SPELLINGS)
def test_live_host_when_any_spelling_then_refused_before_any_request(
    url: str, fake: FakeAlpaca, sockets: list[object]
) -> None:
    with pytest.raises(LiveTradingRefused):
        broker(url)
    with pytest.raises(LiveTradingRefused):  # whatever else is wrong, the host is checked first
        broker(url, key="", secret="")
    assert sockets == []
    assert sum(fake.requests.values()) == 0


def test_live_host_hidden_behind_loopback_userinfo_then_refused(fake: FakeAlpaca) -> None:
    with pytest.raises(LiveTradingRefused):
        broker(fake.url + "@api.alpaca.markets")
    assert sum(fake.requests.values()) == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://paper-api.alpaca.markets:8443",  # a paper host on another port is not Alpaca's
        "http://paper-api.alpaca.markets",  # alpaca-py follows no redirect to https
        "https://paper-api.alpaca.markets/v2",  # alpaca-py appends /v2 itself
        "https://data.alpaca.markets",
        "https://broker-api.alpaca.markets",
        "https://paper-api.alpaca.markets.evil.example",
        "http://127.1:8080",
        "http://0x7f000001",
        "http://10.0.0.1",
        "ftp://127.0.0.1",
        "",
    ],
)
def test_other_hosts_then_refused(url: str, sockets: list[object]) -> None:
    with pytest.raises(LiveTradingRefused):
        broker(url)
    assert sockets == []


def test_live_host_from_settings_then_refused(sockets: list[object]) -> None:
    settings = Settings(
        _env_file=None,
        alpaca_api_key=SecretStr(KEY),
        alpaca_secret_key=SecretStr(SECRET),
        alpaca_base_url="https://api.alpaca.markets/",
    )
    with pytest.raises(LiveTradingRefused, match="live host"):
        AlpacaPaperBroker.from_settings(settings)
    assert sockets == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://paper-api.alpaca.markets", PAPER_BASE_URL),
        ("HTTPS://Paper-API.Alpaca.Markets/", PAPER_BASE_URL),
        ("https://paper-api.alpaca.markets:443", PAPER_BASE_URL),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.9.8.7:1", "http://127.9.8.7:1"),
        ("http://LOCALHOST:9", "http://localhost:9"),
        ("http://[::1]:9/", "http://[::1]:9"),
    ],
)
def test_paper_host_or_loopback_then_accepted(url: str, expected: str, sockets: list[object]) -> None:
    b = broker(url)
    assert b.base_url == expected
    assert b.authoritative is True
    assert sockets == []


def test_loopback_by_name_then_requests_reach_it(fake: FakeAlpaca) -> None:
    b = broker(fake.url.replace("127.0.0.1", "localhost") + "/")
    assert b.account().cash == 100_000.0
    assert fake.requests["GET /v2/account"] == 1


def test_missing_keys_then_clear_error(fake: FakeAlpaca) -> None:
    with pytest.raises(BrokerAuthError, match="ALPACA_API_KEY"):
        AlpacaPaperBroker.from_settings(Settings(_env_file=None, alpaca_base_url=fake.url))


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_status_then_retried_and_one_order_placed(status: int, fake: FakeAlpaca) -> None:
    fake.fail(POST, status, times=2, body={"code": status * 100000, "message": "transient"}, retry_after="0")
    order = broker(fake.url).submit(intent())
    assert (order.status, order.filled_qty) == ("accepted", 0.0)  # Alpaca fills later, not in the POST
    assert fake.orders_accepted == 1
    assert fake.requests[POST] == 3  # alpaca-py's own retries are off: one request per attempt


def test_429_then_success_places_one_order(fake: FakeAlpaca) -> None:
    fake.fail(POST, 429)
    order = broker(fake.url).submit(intent())
    assert (fake.requests[POST], fake.orders_accepted) == (2, 1)
    assert fake.by_client_id(order.client_order_id) is not None


def test_503_outage_then_unavailable_within_budget_and_nothing_placed(fake: FakeAlpaca) -> None:
    fake.fail(POST, 503, times=10_000)
    b = broker(fake.url, timeout=0.2, budget=0.8, attempts=1000)
    with pytest.raises(BrokerUnavailable, match=r"^Alpaca POST /v2/orders still failing after .*503"):
        b.submit(intent())
    assert 3 <= fake.requests[POST] < 1000  # the budget, not the 1000 attempts, ended it
    assert fake.orders_accepted == 0

    fake.heal()
    assert b.submit(intent()).status == "accepted"
    assert fake.orders_accepted == 1


def test_outage_then_attempts_bounded_by_count(fake: FakeAlpaca) -> None:
    fake.fail("GET /v2/account", 500, times=10_000)
    with pytest.raises(BrokerUnavailable):
        broker(fake.url, budget=30.0, attempts=3).account()
    assert fake.requests["GET /v2/account"] == 3


def test_connection_refused_then_retried_then_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # held, never listening: refused, and no other process can take it
        port = s.getsockname()[1]
        with pytest.raises(BrokerUnavailable, match="ConnectionError"):
            broker(f"http://127.0.0.1:{port}", budget=0.5, attempts=3).clock()


def test_slow_order_answer_then_timeout_retry_and_the_landed_order_is_adopted(fake: FakeAlpaca) -> None:
    fake.slow(POST, 5.0)  # the order lands, the answer comes after the client gave up
    order = broker(fake.url, timeout=0.3).submit(intent())
    assert (fake.requests[POST], fake.requests[BY_CID], fake.orders_accepted) == (2, 1, 1)
    landed = fake.by_client_id(order.client_order_id)
    assert landed is not None
    assert order.broker_order_id == landed["id"]


def test_slow_read_then_timeout_and_retried(fake: FakeAlpaca) -> None:
    fake.slow("GET /v2/positions", 5.0)
    assert broker(fake.url, timeout=0.3).positions() == []
    assert fake.requests["GET /v2/positions"] == 2


def test_duplicate_client_id_then_existing_order_adopted(
    fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    first = broker(fake.url).submit(intent())  # say, by a process that died before its commit
    with caplog.at_level(logging.INFO, logger="strategy_engine.brokers.alpaca"):
        again = broker(fake.url).submit(intent())
    assert "Alpaca already holds order se-000000000000000000000001: adopting it" in caplog.messages
    assert (first.status, again.status) == ("accepted", "filled")  # it filled in between
    assert (again.broker_order_id, again.client_order_id) == (first.broker_order_id, first.client_order_id)
    assert (again.filled_qty, again.filled_avg_price) == (1.0, 100.0)
    assert (fake.requests[POST], fake.orders_accepted) == (2, 1)


def test_client_id_already_used_by_a_different_order_then_rejected_not_adopted(fake: FakeAlpaca) -> None:
    b = broker(fake.url)
    b.submit(intent(qty=1))
    with pytest.raises(OrderRejected, match="another order"):
        b.submit(intent(qty=2))
    assert fake.orders_accepted == 1


def test_a_refusal_saying_unique_that_is_not_a_422_then_rejected_not_adopted(fake: FakeAlpaca) -> None:
    fake.fail(POST, 403, body={"code": 40310000, "message": "unique account restriction"})
    with pytest.raises(OrderRejected, match="unique account restriction"):
        broker(fake.url).submit(intent())
    assert fake.requests[BY_CID] == 0


def test_lookup_by_client_id_refused_or_down_then_unavailable_naming_the_call(fake: FakeAlpaca) -> None:
    fake.fail(BY_CID, 403, body={"code": 40310000, "message": "lookup forbidden"})
    with pytest.raises(BrokerUnavailable, match=r"^Alpaca order lookup failed: .*lookup forbidden"):
        broker(fake.url).get_by_client_id("se-000000000000000000000001")
    fake.fail(BY_CID, 503, times=50)
    with pytest.raises(BrokerUnavailable, match=r"^Alpaca GET order by client id still failing after"):
        broker(fake.url).get_by_client_id("se-000000000000000000000001")


def test_duplicate_answer_but_order_not_found_then_unavailable(fake: FakeAlpaca) -> None:
    fake.fail(POST, 422)
    with pytest.raises(BrokerUnavailable, match="duplicate"):
        broker(fake.url).submit(intent())


def test_insufficient_buying_power_then_rejected_with_code_and_message(fake: FakeAlpaca) -> None:
    with pytest.raises(OrderRejected) as caught:
        broker(fake.url).submit(intent(qty=5_000))  # 500k at 100 > 100k cash
    assert (caught.value.code, caught.value.message) == (40310000, "insufficient buying power")
    assert (fake.requests[POST], fake.orders_accepted) == (1, 0)


def test_other_422_with_the_duplicate_code_then_rejected_not_adopted(fake: FakeAlpaca) -> None:
    fake.fail(POST, 422, body={"code": 40010001, "message": "could not find us_equity 'ZZZZ'"})
    with pytest.raises(OrderRejected, match="ZZZZ") as caught:
        broker(fake.url).submit(intent(symbol="ZZZZ"))
    assert caught.value.code == 40010001
    assert fake.requests[BY_CID] == 0


def test_invalid_quantity_then_rejected_before_sending(fake: FakeAlpaca) -> None:
    with pytest.raises(OrderRejected, match=r"invalid order 'SPY' qty 0: nothing sent$"):
        broker(fake.url).submit(intent(qty=0))
    assert sum(fake.requests.values()) == 0


def test_wrong_keys_then_auth_error_not_retried(fake: FakeAlpaca) -> None:
    with pytest.raises(BrokerAuthError, match="401"):
        broker(fake.url, secret="wrong-secret").account()
    assert fake.requests["GET /v2/account"] == 1


def test_401_on_submit_then_auth_error_not_rejection(fake: FakeAlpaca) -> None:
    fake.fail(POST, 401, body="<html>401 Authorization Required</html>")
    with pytest.raises(BrokerAuthError):
        broker(fake.url).submit(intent())


def test_forbidden_read_then_unavailable_with_the_brokers_words(fake: FakeAlpaca) -> None:
    fake.fail("GET /v2/account", 403, body={"code": 40310000, "message": "account is blocked"})
    with pytest.raises(BrokerUnavailable, match="account is blocked"):
        broker(fake.url).account()


def test_money_strings_then_floats() -> None:
    with FakeAlpaca(fill="instant", shorting=True) as fake:  # fills inside the POST: one answer to read
        fake.prices["SPY"] = Decimal("412.37")
        b = broker(fake.url)
        order = b.submit(intent(qty=3))
        b.submit(OrderIntent("QQQ", Side.SELL, 2, 100.0, "se-short"))
        account, positions = b.account(), b.positions()
    assert order.filled_avg_price == pytest.approx(412.37)
    assert account.cash == pytest.approx(100_000 - 3 * 412.37 + 200)
    assert account.equity == pytest.approx(100_000)
    assert [(p.symbol, p.qty, p.avg_entry_price) for p in positions] == [
        ("QQQ", -2.0, 100.0),
        ("SPY", 3.0, 412.37),
    ]
    assert all(
        isinstance(v, float) for v in (account.cash, account.buying_power, order.qty, order.filled_qty)
    )


def test_open_order_then_status_brought_up_to_date_by_client_id(fake: FakeAlpaca) -> None:
    fake.set_policy("manual")
    b = broker(fake.url)
    placed = b.submit(intent())
    assert (placed.status, placed.filled_qty, placed.filled_avg_price) == ("accepted", 0.0, None)
    fake.fill()
    later = b.get_by_client_id(placed.client_order_id)
    assert later is not None
    assert (later.status, later.filled_qty, later.filled_avg_price) == ("filled", 1.0, 100.0)
    assert later.broker_order_id == placed.broker_order_id
    assert b.get_by_client_id("se-never-sent") is None


def test_clock_then_utc_and_open_flag(fake: FakeAlpaca) -> None:
    fake.is_open = False
    now, is_open = broker(fake.url).clock()
    assert now.utcoffset() is not None
    assert now.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert is_open is False


def test_secrets_then_absent_from_repr_errors_and_logs(
    fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = broker(fake.url, budget=0.5)
    errors: list[BaseException] = []
    fake.fail("GET /v2/account", 500, times=10_000, body={"code": 1, "message": f"proxy echo {KEY} {SECRET}"})
    fake.fail(POST, 403)
    fake.slow("GET /v2/positions", 5.0, times=10_000)
    for call in (b.account, lambda: b.submit(intent()), b.positions, broker(fake.url, secret="bad").clock):
        with pytest.raises(Exception) as caught:  # noqa: PT011 - every kind of failure is the point
            call()
        errors.append(caught.value)
        logging.getLogger("test").error("broker call failed", exc_info=caught.value)
    texts = [repr(b), str(vars(b)), caplog.text]
    texts += ["".join(traceback.format_exception(e)) for e in errors]
    assert {type(e).__name__ for e in errors} == {"BrokerUnavailable", "OrderRejected", "BrokerAuthError"}
    assert "proxy echo ********** **********" in str(errors[0])  # masked, the rest kept
    for text in texts:
        assert KEY not in text
        assert SECRET not in text


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def dead_port() -> int:
    with socket.socket() as s:  # bound then closed: a connection there is refused at once
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_a_proxy_set_in_the_environment_is_used(fake: FakeAlpaca, no_proxies: pytest.MonkeyPatch) -> None:
    no_proxies.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port()}")
    with pytest.raises(BrokerUnavailable):
        broker(fake.url).account()  # through the (dead) proxy, never straight to the server
    assert sum(fake.requests.values()) == 0


def test_no_proxy_covering_the_host_sends_straight_to_it(
    fake: FakeAlpaca, no_proxies: pytest.MonkeyPatch
) -> None:
    no_proxies.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port()}")
    no_proxies.setenv("NO_PROXY", "127.0.0.1")
    assert broker(fake.url).account().cash > 0
    assert fake.requests["GET /v2/account"] == 1


def test_the_environment_is_read_when_the_client_is_built_not_per_request(
    fake: FakeAlpaca, no_proxies: pytest.MonkeyPatch
) -> None:
    client = broker(fake.url)  # built once per invocation: what the environment says then holds
    no_proxies.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port()}")
    no_proxies.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/bundle.pem")
    assert client.account().cash > 0  # no proxy when it was built: straight to the server
    later = broker(fake.url)._client._session  # a client built now takes both
    assert (later.proxies.get("http"), later.verify) == (os.environ["HTTP_PROXY"], "/nonexistent/bundle.pem")


def test_the_deployed_retry_schedule_then_six_attempts_backing_off_to_four_seconds(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker as `from_settings` builds it (attempts and backoff left at their defaults): a
    read failing on every attempt is tried 6 times, the pauses 0.25 s doubling up to 4 s, each
    with up to 0.25 s of jitter (tenacity's `wait_exponential_jitter`). The pauses are recorded,
    not slept."""
    paused: list[float] = []
    monkeypatch.setattr(time, "sleep", paused.append)  # tenacity's sleep calls time.sleep
    fake.fail("GET /v2/account", 500, times=10_000)
    settings = Settings(_env_file=None, alpaca_api_key=SecretStr(KEY), alpaca_secret_key=SecretStr(SECRET),
                        alpaca_base_url=fake.url)  # fmt: skip
    deployed = AlpacaPaperBroker.from_settings(settings)
    with pytest.raises(BrokerUnavailable, match=r"^Alpaca GET /v2/account still failing after"):
        deployed.account()
    assert fake.requests["GET /v2/account"] == 6
    assert len(paused) == 5
    for k, pause in enumerate(paused[:4]):
        assert 0.25 * 2**k <= pause <= 0.25 * 2**k + 0.25, paused
    assert paused[4] == 4.0  # 4 s plus jitter, capped at 4 s


@pytest.mark.parametrize("url", [PAPER_BASE_URL, "HTTPS://Paper-API.Alpaca.Markets/", None])
def test_the_paper_host_is_the_one_the_requests_go_to(url: str | None, sockets: list[object]) -> None:
    """Not only the URL we record: the address alpaca-py's client connects to (its `paper` flag
    and our override) is Alpaca's paper host, never the live one; None: the constructor's
    default. The connection is refused here, and the lookup it tried is what is checked."""
    keys = (SecretStr(KEY), SecretStr(SECRET))
    b = (
        AlpacaPaperBroker(*keys, timeout_seconds=0.05, retry_budget_seconds=0.05, max_attempts=1)
        if url is None
        else broker(url, budget=0.05, attempts=1)
    )
    with pytest.raises(BrokerUnavailable):
        b.account()
    hosts = {args[0] for args in sockets if isinstance(args, tuple) and args and isinstance(args[0], str)}
    assert hosts == {"paper-api.alpaca.markets"}, sockets


@pytest.mark.parametrize(("key", "secret"), [("", SECRET), (KEY, ""), ("", "")])
def test_either_key_missing_then_clear_error_before_any_request(
    key: str, secret: str, sockets: list[object]
) -> None:
    with pytest.raises(BrokerAuthError, match=r"^ALPACA_API_KEY and ALPACA_SECRET_KEY must both be set$"):
        broker(PAPER_BASE_URL, key=key, secret=secret)
    assert sockets == []


@pytest.mark.parametrize("held", [LIST_LIMIT - 1, LIST_LIMIT])
def test_an_open_orders_answer_that_is_full_then_unavailable_not_a_partial_count(held: int) -> None:
    """Alpaca answers at most 500 orders a list. 499 open orders are all read; 500 may be some
    of more, and limits must count every working order, so the read fails (the account's minute
    fails and alerts) instead of trading on a partial count."""
    with FakeAlpaca() as fake:
        fake.hold_open(held, prefix="c")
        b = broker(fake.url)
        if held < LIST_LIMIT:
            assert [o.client_order_id for o in b.open_orders()] == [f"c{k}" for k in range(held)]
        else:
            with pytest.raises(
                BrokerUnavailable, match=r"^Alpaca lists 500 open orders, a full answer: more may work$"
            ):
                b.open_orders()
        assert fake.requests["GET /v2/orders"] == 1


def test_every_request_has_the_timeout_https_included() -> None:
    """The loopback tests speak http; Alpaca speaks https: both schemes get the timeout."""
    b = broker(PAPER_BASE_URL, timeout=0.7)
    for url in (PAPER_BASE_URL + "/v2/account", "http://127.0.0.1:9/v2/account"):
        adapter = b._client._session.get_adapter(url)
        assert isinstance(adapter, TimeoutAdapter) and adapter._timeout == 0.7, url


def test_from_settings_passes_the_timeout_of_the_settings(fake: FakeAlpaca) -> None:
    """Settings hold the one default (10 s) and any value set; `from_settings` hands it on."""
    key, secret = SecretStr(KEY), SecretStr(SECRET)
    unset = Settings(_env_file=None, alpaca_api_key=key, alpaca_secret_key=secret)
    set_ = Settings(_env_file=None, alpaca_api_key=key, alpaca_secret_key=secret, alpaca_timeout_seconds=3.5)
    for settings, expected in ((unset, 10.0), (set_, 3.5)):
        adapter = AlpacaPaperBroker.from_settings(settings)._client._session.get_adapter(PAPER_BASE_URL)
        assert isinstance(adapter, TimeoutAdapter) and adapter._timeout == expected


def test_each_retry_is_logged_with_the_call_the_failure_the_attempt_and_the_pause(
    fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("GET /v2/account", 500, times=2)
    with caplog.at_level(logging.WARNING, logger="strategy_engine.brokers.alpaca"):
        assert broker(fake.url).account().cash == 100_000.0
    assert len(caplog.messages) == 2, caplog.messages
    for attempt, message in enumerate(caplog.messages, start=1):
        assert re.fullmatch(
            rf"Alpaca GET /v2/account failed \(HTTP 500 \(50010000\): internal server error\), "
            rf"attempt {attempt}; retrying in 0\.0\ds",
            message,
        ), message


def test_an_attempt_starts_only_if_it_can_end_within_the_budget(fake: FakeAlpaca) -> None:
    """A budget no longer than one timeout leaves no time for a second attempt that could run
    its whole timeout: one request, then the outage. A budget of two timeouts allows more."""
    fake.fail("GET /v2/account", 500, times=10_000)
    with pytest.raises(BrokerUnavailable):
        broker(fake.url, timeout=0.3, budget=0.3, attempts=6).account()
    assert fake.requests["GET /v2/account"] == 1
    with pytest.raises(BrokerUnavailable):
        broker(fake.url, timeout=0.3, budget=0.6, attempts=3).account()
    assert fake.requests["GET /v2/account"] == 1 + 3


def test_keys_of_a_credentials_ref_not_set_then_the_error_names_that_pair(
    monkeypatch: pytest.MonkeyPatch, sockets: list[object]
) -> None:
    monkeypatch.setenv("ALPACA_K7_API_KEY", KEY)  # the secret of the pair is missing
    monkeypatch.delenv("ALPACA_K7_SECRET_KEY", raising=False)
    monkeypatch.chdir(os.path.dirname(__file__))  # no .env here
    settings = Settings(_env_file=None, alpaca_api_key=SecretStr(KEY), alpaca_secret_key=SecretStr(SECRET))
    with pytest.raises(
        BrokerAuthError, match=r"^ALPACA_K7_API_KEY and ALPACA_K7_SECRET_KEY must both be set$"
    ):
        AlpacaPaperBroker.from_settings(settings, "K7")
    assert AlpacaPaperBroker.from_settings(settings).base_url == PAPER_BASE_URL  # the default pair is set
    assert sockets == []


@pytest.mark.parametrize(
    ("read", "route", "named"),
    [
        (lambda b: b.account(), "GET /v2/account", "GET /v2/account"),
        (lambda b: b.positions(), "GET /v2/positions", "GET /v2/positions"),
        (lambda b: b.clock(), "GET /v2/clock", "GET /v2/clock"),
        (lambda b: b.open_orders(), "GET /v2/orders", "GET /v2/orders (open)"),
        (
            lambda b: b.recent_orders(datetime(2025, 6, 13, tzinfo=UTC)),
            "GET /v2/orders",
            "GET /v2/orders (recent)",
        ),
    ],
)
def test_a_read_that_keeps_failing_is_named_in_the_outage(
    fake: FakeAlpaca, read: Callable[[AlpacaPaperBroker], object], route: str, named: str
) -> None:
    fake.fail(route, 500, times=10_000)
    with pytest.raises(
        BrokerUnavailable, match=rf"^Alpaca {re.escape(named)} still failing after .*HTTP 500"
    ):
        read(broker(fake.url, attempts=2))
    assert fake.requests[route] == 2


def test_the_recent_list_holds_every_status_newest_first_from_the_time_given() -> None:
    """`recent_orders(after)`: orders of any status submitted after `after` (a filled one too,
    which the open list leaves out), newest first, from one request; none submitted after a
    later time."""
    with FakeAlpaca(fill="manual") as fake:
        b = broker(fake.url)
        before = datetime.now(UTC)
        for k, symbol in enumerate(("SPY", "QQQ", "IWM")):
            b.submit(intent(f"se-{k:024d}", symbol=symbol))
        fake.fill("SPY")
        recent = b.recent_orders(before)
        assert [(o.client_order_id, o.status) for o in recent] == [
            (f"se-{2:024d}", "accepted"), (f"se-{1:024d}", "accepted"), (f"se-{0:024d}", "filled")
        ]  # fmt: skip
        assert [o.client_order_id for o in b.open_orders()] == [f"se-{1:024d}", f"se-{2:024d}"]
        assert b.recent_orders(datetime.now(UTC) + timedelta(hours=1)) == []
        for k in range(3, 80):  # past Alpaca's default page of 50: the list asks for its most
            fake.place({"symbol": "DIA", "side": "buy", "qty": "1", "client_order_id": f"se-{k:024d}"})
        assert [o.client_order_id for o in b.recent_orders(before)] == [
            f"se-{k:024d}" for k in range(79, -1, -1)
        ]
        assert fake.requests["GET /v2/orders"] == 4


@pytest.mark.parametrize(
    ("requests_bundle", "curl_bundle", "verify"),
    [(None, "/etc/curl.pem", "/etc/curl.pem"), ("/etc/requests.pem", "/etc/curl.pem", "/etc/requests.pem"),
     (None, None, True)],
)  # fmt: skip
def test_the_ca_bundle_is_requests_then_curls_as_requests_reads_them(
    no_proxies: pytest.MonkeyPatch, requests_bundle: str | None, curl_bundle: str | None, verify: object
) -> None:
    for name, value in (("REQUESTS_CA_BUNDLE", requests_bundle), ("CURL_CA_BUNDLE", curl_bundle)):
        if value is None:
            no_proxies.delenv(name, raising=False)
        else:
            no_proxies.setenv(name, value)
    assert broker(PAPER_BASE_URL)._client._session.verify == verify


def test_the_transport_never_retries_by_itself_the_retry_loop_is_ours(fake: FakeAlpaca) -> None:
    """Two slow answers and two attempts allowed: both attempts time out and the read fails. A
    transport that re-sent on its own would have made a third request and succeeded."""
    fake.slow("GET /v2/account", 5.0, times=2)
    with pytest.raises(BrokerUnavailable, match="ReadTimeout"):
        broker(fake.url, timeout=0.3, attempts=2).account()
    assert fake.requests["GET /v2/account"] == 2
