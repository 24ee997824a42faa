"""The HTTP rules of the Alpaca adapter: a timeout on every request, what counts as an outage
(`Transient`: retried within the budget), the pause between attempts (`RetryAfter`), and the
wall-clock deadline no POST attempt may start after (`held_to`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState
from tenacity.wait import wait_base

from strategy_engine.core.errors import BrokerUnavailable, NotSent


class Transient(Exception):
    """Worth another attempt: a timeout, a dropped connection, 429, 5xx, 3xx, an empty body."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout: alpaca-py passes none (alpacahq/alpaca-py#415)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, *args, **kwargs)


def refuse_redirect(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A 3xx is never Alpaca's answer (alpaca-py does not follow redirects): a proxy or a moved
    host answered. Treated as an outage, so it is retried and then fails the minute whole."""
    if 300 <= response.status_code < 400:
        response.close()  # raising here skips requests' own release of the connection
        raise Transient(f"HTTP {response.status_code} redirect from Alpaca's address")


def retry_after(response: requests.Response | None) -> float | None:
    """Seconds the server asked us to wait (`Retry-After`, seconds or an HTTP date), if any."""
    value = None if response is None else response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class RetryAfter(wait_base):
    """The backoff, or the server's `Retry-After` when longer; `stop_before_delay` then gives up
    at once if that pause would end past the budget."""

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        pause = float(self._backoff(retry_state))
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hinted = exc.retry_after if isinstance(exc, Transient) else None
        return pause if hinted is None else max(pause, hinted)


def held_to(send_by: datetime | None, post: Callable[[], Any]) -> Callable[[], Any]:
    """`post`, refused once the wall clock reaches `send_by`: before the first attempt nothing has
    gone (NotSent); before a later one an earlier attempt may have landed (BrokerUnavailable, the
    next run's reconciliation looks it up). A worker that froze before its POST never sends late."""
    attempts = 0

    def attempt() -> Any:
        nonlocal attempts
        attempts += 1
        if send_by is not None and datetime.now(UTC) >= send_by:
            if attempts == 1:
                raise NotSent("deadline", f"past the invocation's deadline ({send_by.isoformat()}): not sent")
            raise BrokerUnavailable("past the invocation's deadline between attempts: not re-sent")
        return post()

    return attempt
