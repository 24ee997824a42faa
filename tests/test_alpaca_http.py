"""The Alpaca adapter's HTTP rules on their own: the pause a server asks for (`Retry-After`, in
seconds or as an HTTP date) and the deadline no POST attempt may start after (`held_to`).

The engine-level tests reach these through the loopback Alpaca with seconds-valued headers only;
the cases here pin the date form and the first-versus-later attempt distinction, which decides
whether a late order is "not sent" (safe to forget) or "maybe landed" (looked up next minute).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from strategy_engine.brokers.alpaca_http import TimeoutAdapter, held_to, retry_after
from strategy_engine.core.errors import BrokerUnavailable, NotSent
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca


def answer(retry_after_header: str | None) -> requests.Response:
    response = requests.Response()
    if retry_after_header is not None:
        response.headers["Retry-After"] = retry_after_header
    return response


def test_retry_after_when_no_answer_or_no_header_then_none() -> None:
    assert retry_after(None) is None  # a timeout or a dropped connection has no answer
    assert retry_after(answer(None)) is None
    assert retry_after(answer("soon")) is None  # neither seconds nor a date


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0)])
def test_retry_after_in_seconds_then_those_seconds_never_negative(header: str, seconds: float) -> None:
    assert retry_after(answer(header)) == seconds


def test_retry_after_as_a_past_http_date_then_no_pause() -> None:
    assert retry_after(answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0


def test_retry_after_as_a_future_http_date_then_the_time_until_it() -> None:
    hour_ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    pause = retry_after(answer(format_datetime(hour_ahead, usegmt=True)))
    assert pause is not None
    assert 3600 - 60 < pause <= 3600  # an hour, less the moments this test has taken


def until(moment: datetime) -> None:
    while datetime.now(UTC) < moment:
        pass


def test_held_to_when_a_later_attempt_starts_past_the_deadline_then_maybe_landed_not_unsent() -> None:
    send_by = datetime.now(UTC) + timedelta(milliseconds=20)
    posts: list[int] = []

    def post() -> int:
        posts.append(1)
        until(send_by)  # the first attempt is still in flight when the deadline passes
        return len(posts)

    attempt = held_to(send_by, post)
    assert attempt() == 1
    with pytest.raises(BrokerUnavailable, match="between attempts"):
        attempt()  # the first POST may have landed: not NotSent, which would forget it
    assert len(posts) == 1


def test_held_to_when_the_first_attempt_starts_past_the_deadline_then_not_sent() -> None:
    posts: list[int] = []
    send_by = datetime(2025, 6, 13, 14, 1, 50, tzinfo=UTC)  # long past
    attempt = held_to(send_by, lambda: posts.append(1))
    with pytest.raises(NotSent) as refused:
        attempt()
    assert (refused.value.code, str(refused.value)) == (
        "deadline",
        "past the invocation's deadline (2025-06-13T14:01:50+00:00): not sent",
    )
    assert posts == []


def test_the_timeout_adapter_keeps_a_callers_own_timeout_and_gives_one_to_a_request_without() -> None:
    """Answers come 1 s late. The adapter's 0.3 s ends a request that names no timeout (as
    alpaca-py's do); a request naming its own 0.2 s keeps it, and one naming 30 s is answered."""
    with FakeAlpaca() as fake, requests.Session() as session:
        session.mount("http://", TimeoutAdapter(0.3))
        session.headers.update({"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET})
        fake.slow("GET /v2/account", 1.0, times=3)
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(fake.url + "/v2/account")
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(fake.url + "/v2/account", timeout=(5.0, 0.2))
        assert session.get(fake.url + "/v2/account", timeout=30.0).status_code == 200
