"""The HTTP rules of the Alpaca adapter: a timeout on every request, the environment read once
per client (`environment_once`), what counts as an outage (`Transient`: retried within the
budget), the pause between attempts (`RetryAfter`), and the wall-clock deadline no POST attempt
may start after (`held_to`).
"""

from __future__ import annotations

import os
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


def environment_once(session: requests.Session, url: str) -> None:
    """Read the proxy and CA-bundle settings from the environment now, once, instead of on every
    request.

    With `trust_env` (the default) requests asks the environment before each request: the
    proxies for the URL (`getproxies_environment` walks all of `os.environ`, twice per
    request), `NO_PROXY`, `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE` and `~/.netrc`. That was about a
    fifth of the CPU of an order's POST (cProfile of 200 POSTs to the loopback Alpaca). The
    client is built once per invocation, so the settings honoured are the same: `HTTPS_PROXY`,
    `HTTP_PROXY` and `ALL_PROXY` unless `NO_PROXY` covers `url`'s host, and the CA bundle.
    `~/.netrc` is not read: Alpaca authenticates with its key headers, never with basic auth.
    """
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


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
