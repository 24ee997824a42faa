"""Alpaca paper trading through alpaca-py, made safe for a stateless once-a-minute tick.

alpaca-py sends requests without a timeout and re-sends 429/504 by itself, 3 s apart, POST
included (alpacahq/alpaca-py, rest.py `_retry`): a stalled socket would hang the tick, and its invisible
retries would eat the minute. So the client's own retries are switched off (`_retry = 0`), its
session gets a transport with a default timeout, and one tenacity loop bounded in attempts and in
total time wraps every call. Re-sending an order is safe because it carries the tick's
deterministic client_order_id: when an earlier attempt did land, Alpaca answers "client_order_id
must be unique" and we adopt that order.

alpaca-py and requests errors become ours here and nowhere else, once: a 3xx, an empty or
`null` body and an unreadable one are outages like a 5xx (retried, then the minute fails whole);
`Retry-After` sets the pause when it fits the budget; answers are read as raw JSON by
`alpaca_parse` (the client runs with `raw_data=True`), never by alpaca-py's strict models.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from strategy_engine.brokers import alpaca_parse as parse
from strategy_engine.brokers.alpaca_http import (
    RetryAfter,
    TimeoutAdapter,
    Transient,
    environment_once,
    held_to,
    refuse_redirect,
    retry_after,
)
from strategy_engine.brokers.paper_url import checked_base_url
from strategy_engine.core.errors import BrokerUnavailable, OrderRejected
from strategy_engine.core.models import Account, Order, OrderIntent, Position
from strategy_engine.settings import PAPER_BASE_URL, Settings, alpaca_keys, credential_names

log = logging.getLogger(__name__)

LIST_LIMIT = 500  # Alpaca's most orders in one GET /v2/orders answer
_TRANSIENT_IO = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


class BrokerAuthError(BrokerUnavailable):
    """Alpaca refused the keys (or none are set): the minute fails whole and retries once fixed."""


class _ClientError(Exception):
    """A 4xx answer; what it means (rejected order, unknown order) depends on the call."""

    def __init__(self, status: int, code: int | str | None, message: str) -> None:
        super().__init__(f"HTTP {status} ({code}): {message}")
        self.status, self.code, self.message = status, code, message
        self.after_transient = False  # set when an earlier attempt of the same call failed transiently


class AlpacaPaperBroker:
    authoritative = True

    def __init__(
        self,
        api_key: SecretStr,
        secret_key: SecretStr,
        base_url: str = PAPER_BASE_URL,
        *,
        key_names: tuple[str, str] = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"),
        timeout_seconds: float,  # the defaults live in Settings (`from_settings`), once
        retry_budget_seconds: float,
        max_attempts: int = 6,
        backoff_seconds: float = 0.25,
        backoff_max_seconds: float = 4.0,
    ) -> None:
        override = checked_base_url(base_url)  # first: the live host is refused whatever else is wrong
        if not api_key.get_secret_value() or not secret_key.get_secret_value():
            raise BrokerAuthError(f"{key_names[0]} and {key_names[1]} must both be set")
        self.base_url = override or PAPER_BASE_URL
        self._secrets = (api_key, secret_key)
        client = TradingClient(
            api_key.get_secret_value(),
            secret_key.get_secret_value(),
            paper=True,
            url_override=self.base_url,  # the paper host named, not only implied by `paper`: two guards
            raw_data=True,
        )
        client._retry = 0  # our loop below is the only one; alpaca-py's would sleep 3 s unseen
        adapter = TimeoutAdapter(timeout_seconds)
        client._session.mount("https://", adapter)
        client._session.mount("http://", adapter)
        client._session.hooks["response"].append(refuse_redirect)
        environment_once(client._session, self.base_url)
        self._client = client
        # An attempt starts only if it can end (timeout) before the budget is spent.
        self._retrying = Retrying(
            retry=retry_if_exception_type(Transient),
            stop=stop_after_attempt(max_attempts)
            | stop_before_delay(max(0.0, retry_budget_seconds - timeout_seconds)),
            wait=RetryAfter(
                wait_exponential_jitter(
                    multiplier=backoff_seconds, max=backoff_max_seconds, jitter=backoff_seconds
                )
            ),
            reraise=True,
        )

    @classmethod
    def from_settings(cls, settings: Settings, credentials_ref: str | None = None) -> AlpacaPaperBroker:
        """The broker for the key pair `credentials_ref` names (None: the default pair).

        Raises InputError for a malformed ref, BrokerAuthError when its keys are not set.
        """
        key, secret = alpaca_keys(settings, credentials_ref)
        return cls(
            key,
            secret,
            settings.alpaca_base_url,
            key_names=credential_names(credentials_ref),
            timeout_seconds=settings.alpaca_timeout_seconds,
            retry_budget_seconds=settings.alpaca_retry_budget_seconds,
        )

    def __repr__(self) -> str:
        return f"AlpacaPaperBroker(base_url={self.base_url!r})"

    def account(self) -> Account:
        return parse.account(self._read("GET /v2/account", self._client.get_account))

    def positions(self) -> list[Position]:
        return parse.positions(self._read("GET /v2/positions", self._client.get_all_positions))

    def clock(self) -> tuple[datetime, bool]:
        return parse.clock(self._read("GET /v2/clock", self._client.get_clock))

    def open_orders(self) -> list[Order]:
        """Every order Alpaca still works on, in one call (`GET /v2/orders?status=open`).

        A full answer (LIST_LIMIT orders) may leave working orders out, and limits must count every
        one: BrokerUnavailable then (the account's minute fails, alerting) until some are canceled."""
        query = {"status": "open", "limit": LIST_LIMIT, "direction": "asc"}
        listed = self._read("GET /v2/orders (open)", lambda: self._client.get("/orders", query))
        if isinstance(listed, list) and len(listed) >= LIST_LIMIT:
            raise BrokerUnavailable(f"Alpaca lists {LIST_LIMIT} open orders, a full answer: more may work")
        return parse.orders(listed)

    def recent_orders(self, after: datetime) -> list[Order]:
        """Orders of any status submitted after `after`, newest first, up to 500 (one call)."""
        since = after.astimezone(UTC).isoformat()
        query = {"status": "all", "after": since, "limit": LIST_LIMIT, "direction": "desc"}
        return parse.orders(self._read("GET /v2/orders (recent)", lambda: self._client.get("/orders", query)))

    def get_by_client_id(self, client_order_id: str) -> Order | None:
        try:
            found = self._call(
                "GET order by client id", lambda: self._client.get_order_by_client_id(client_order_id)
            )
        except _ClientError as exc:
            if exc.status == 404:
                return None
            raise BrokerUnavailable(f"Alpaca order lookup failed: {exc}") from exc
        return parse.order(found)

    def submit(self, intent: OrderIntent) -> Order:
        """A market day order; re-sending the same client id never places a second one.

        A refusal that follows a transient failure of the same call may be the answer to a
        re-send of an order the first attempt placed: the order is looked up by client id and
        adopted if it exists; only an order Alpaca does not hold is called rejected.
        """
        if not (math.isfinite(intent.qty) and intent.qty > 0 and intent.symbol and intent.client_order_id):
            raise OrderRejected(None, f"invalid order {intent.symbol!r} qty {intent.qty}: nothing sent")
        try:
            request = MarketOrderRequest(
                symbol=intent.symbol,
                qty=intent.qty,
                side=OrderSide(intent.side.value),
                time_in_force=TimeInForce.DAY,
                client_order_id=intent.client_order_id,
            )
        except ValueError as exc:  # pydantic's ValidationError included
            raise OrderRejected(None, f"invalid order: {exc}") from exc
        try:
            post = held_to(intent.send_by, lambda: self._client.submit_order(request))
            placed = self._call("POST /v2/orders", post)
        except _ClientError as exc:
            if _is_duplicate(exc):
                return self._adopt(intent)
            if exc.after_transient and (found := self.get_by_client_id(intent.client_order_id)):
                return _same_order(intent, found)
            raise OrderRejected(exc.code, exc.message) from exc
        return parse.order(placed)

    def _adopt(self, intent: OrderIntent) -> Order:
        cid = intent.client_order_id
        log.info("Alpaca already holds order %s: adopting it", cid)
        existing = self.get_by_client_id(cid)
        if existing is None:
            raise BrokerUnavailable(f"Alpaca calls {cid} a duplicate but cannot find it")
        return _same_order(intent, existing)

    def _read(self, what: str, fn: Callable[[], Any]) -> Any:
        """A read has no "rejected" outcome: a 4xx there fails the minute like an outage."""
        try:
            return self._call(what, fn)
        except _ClientError as exc:
            raise BrokerUnavailable(f"Alpaca {what} failed: {exc}") from exc

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        retrying = self._retrying.copy(before_sleep=partial(_log_retry, what))
        try:
            return retrying(lambda: self._once(fn))
        except Transient as exc:
            elapsed = time.monotonic() - started
            raise BrokerUnavailable(f"Alpaca {what} still failing after {elapsed:.1f}s: {exc}") from exc
        except _ClientError as exc:
            exc.after_transient = retrying.statistics.get("attempt_number", 1) > 1
            raise

    def _once(self, fn: Callable[[], Any]) -> Any:
        try:
            answer = fn()
        except _TRANSIENT_IO as exc:
            raise Transient(type(exc).__name__) from exc
        except APIError as exc:
            raise self._translate(exc) from None  # its text is the raw body: keep the scrubbed parts
        except requests.RequestException as exc:  # an unreadable body (not JSON) included
            raise Transient(f"unreadable answer from Alpaca: {type(exc).__name__}") from exc
        if answer is None:  # alpaca-py turns an empty body into None, and so does a JSON `null`
            raise Transient("empty answer from Alpaca")
        return answer

    def _translate(self, exc: APIError) -> Exception:
        status = int(exc.status_code or 0)
        code, message = _details(str(exc), self._secrets)
        if status == 429 or status >= 500:
            return Transient(f"HTTP {status} ({code}): {message}", retry_after(exc.response))
        if status == 401:
            return BrokerAuthError(f"Alpaca refused the API keys (HTTP 401): {message}")
        return _ClientError(status, code, message)


def _log_retry(what: str, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "Alpaca %s failed (%s), attempt %d; retrying in %.2fs",
        what,
        exc,
        state.attempt_number,
        state.upcoming_sleep,
    )


def _details(body: str, secrets: tuple[SecretStr, ...]) -> tuple[int | str | None, str]:
    """(code, message) of an error body; JSON or not, and scrubbed in case a proxy echoes headers."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    message = str(data.get("message") or body[:200] or "no message")
    for s in secrets:
        message = message.replace(s.get_secret_value(), "**********")
    return data.get("code"), message


def _is_duplicate(exc: _ClientError) -> bool:
    # The code alone is shared with other validation errors (alpaca.md §3): match the message.
    text = exc.message.lower()
    return exc.status == 422 and "client_order_id" in text and "unique" in text


def _same_order(intent: OrderIntent, found: Order) -> Order:
    if (found.symbol, found.side, found.qty) != (intent.symbol, intent.side, intent.qty):
        raise OrderRejected(
            None, f"client_order_id {intent.client_order_id} belongs to another order at Alpaca"
        )
    return found
