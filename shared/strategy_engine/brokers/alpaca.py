"""Alpaca paper trading through alpaca-py, made safe for a stateless once-a-minute tick.

alpaca-py sends requests without a timeout and re-sends 429/504 by itself, 3 s apart, POST
included (reference/alpaca.md §3): a stalled socket would hang the tick, and its invisible
retries would eat the minute. So the client's own retries are switched off (`_retry = 0`), its
session gets a transport with a default timeout, and one tenacity loop bounded in attempts and in
total time wraps every call. Re-sending an order is safe because it carries the tick's
deterministic client_order_id: when an earlier attempt did land, Alpaca answers "client_order_id
must be unique" and we adopt that order.

alpaca-py and requests errors become ours here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, PositionSide, TimeInForce
from alpaca.trading.models import Clock, TradeAccount
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from alpaca.trading.requests import MarketOrderRequest
from pydantic import SecretStr, ValidationError
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from strategy_engine.brokers.paper_url import checked_base_url
from strategy_engine.core.errors import BrokerUnavailable, OrderRejected
from strategy_engine.core.models import Account, Order, OrderIntent, Position, Side
from strategy_engine.settings import PAPER_BASE_URL, Settings, alpaca_keys, credential_names

log = logging.getLogger(__name__)

T = TypeVar("T")
_TRANSIENT_IO = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


class BrokerAuthError(BrokerUnavailable):
    """Alpaca refused the keys (or none are set): the minute fails whole and retries once fixed."""


class _Transient(Exception):
    """Worth another attempt: a timeout, a dropped connection, 429 or 5xx."""


class _ClientError(Exception):
    """A 4xx answer; what it means (rejected order, unknown order) depends on the call."""

    def __init__(self, status: int, code: int | str | None, message: str) -> None:
        super().__init__(f"HTTP {status} ({code}): {message}")
        self.status, self.code, self.message = status, code, message


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout: alpaca-py passes none (alpacahq/alpaca-py#415)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, *args, **kwargs)


class AlpacaPaperBroker:
    authoritative = True

    def __init__(
        self,
        api_key: SecretStr,
        secret_key: SecretStr,
        base_url: str = PAPER_BASE_URL,
        *,
        key_names: tuple[str, str] = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"),
        timeout_seconds: float = 10.0,
        retry_budget_seconds: float = 20.0,
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
            api_key.get_secret_value(), secret_key.get_secret_value(), paper=True, url_override=override
        )
        client._retry = 0  # our loop below is the only one; alpaca-py's would sleep 3 s unseen
        adapter = _TimeoutAdapter(timeout_seconds)
        client._session.mount("https://", adapter)
        client._session.mount("http://", adapter)
        self._client = client
        # An attempt starts only if it can end (timeout) before the budget is spent.
        self._retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(max_attempts)
            | stop_before_delay(max(0.0, retry_budget_seconds - timeout_seconds)),
            wait=wait_exponential_jitter(
                multiplier=backoff_seconds, max=backoff_max_seconds, jitter=backoff_seconds
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
        a = cast(TradeAccount, self._read("GET /v2/account", self._client.get_account))
        return Account(
            cash=_num(a.cash),
            buying_power=_num(a.buying_power),
            equity=_num(a.equity),
            account_number=str(a.account_number),
        )

    def positions(self) -> list[Position]:
        rows = cast(list[AlpacaPosition], self._read("GET /v2/positions", self._client.get_all_positions))
        return [_to_position(p) for p in rows]

    def clock(self) -> tuple[datetime, bool]:
        c = cast(Clock, self._read("GET /v2/clock", self._client.get_clock))
        return _utc(c.timestamp), bool(c.is_open)

    def get_by_client_id(self, client_order_id: str) -> Order | None:
        try:
            found = self._call(
                "GET order by client id", lambda: self._client.get_order_by_client_id(client_order_id)
            )
        except _ClientError as exc:
            if exc.status == 404:
                return None
            raise BrokerUnavailable(f"Alpaca order lookup failed: {exc}") from exc
        return _to_order(cast(AlpacaOrder, found))

    def submit(self, intent: OrderIntent) -> Order:
        """A market day order; re-sending the same client id never places a second one."""
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
            placed = self._call("POST /v2/orders", lambda: self._client.submit_order(request))
        except _ClientError as exc:
            if not _is_duplicate(exc):
                raise OrderRejected(exc.code, exc.message) from exc
            return self._adopt(intent)
        return _to_order(cast(AlpacaOrder, placed))

    def _adopt(self, intent: OrderIntent) -> Order:
        cid = intent.client_order_id
        log.info("Alpaca already holds order %s: adopting it", cid)
        existing = self.get_by_client_id(cid)
        if existing is None:
            raise BrokerUnavailable(f"Alpaca calls {cid} a duplicate but cannot find it")
        if (existing.symbol, existing.side, existing.qty) != (intent.symbol, intent.side, intent.qty):
            raise OrderRejected(None, f"client_order_id {cid} belongs to another order at Alpaca")
        return existing

    def _read(self, what: str, fn: Callable[[], T]) -> T:
        """A read has no "rejected" outcome: a 4xx there fails the minute like an outage."""
        try:
            return self._call(what, fn)
        except _ClientError as exc:
            raise BrokerUnavailable(f"Alpaca {what} failed: {exc}") from exc

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            retrying = self._retrying.copy(before_sleep=partial(_log_retry, what))
            return retrying(lambda: self._once(fn))
        except _Transient as exc:
            elapsed = time.monotonic() - started
            raise BrokerUnavailable(f"Alpaca {what} still failing after {elapsed:.1f}s: {exc}") from exc

    def _once(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except _TRANSIENT_IO as exc:
            raise _Transient(type(exc).__name__) from exc
        except APIError as exc:
            raise self._translate(exc) from None  # its text is the raw body: keep the scrubbed parts
        except (requests.RequestException, ValidationError) as exc:
            raise BrokerUnavailable(f"unexpected answer from Alpaca: {type(exc).__name__}") from exc

    def _translate(self, exc: APIError) -> Exception:
        status = int(exc.status_code or 0)
        code, message = _details(str(exc), self._secrets)
        if status == 429 or status >= 500:
            return _Transient(f"HTTP {status} ({code}): {message}")
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


def _num(value: str | float | None) -> float:
    return 0.0 if value is None or value == "" else float(value)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _to_position(p: AlpacaPosition) -> Position:
    qty = _num(p.qty)
    if p.side == PositionSide.SHORT and qty > 0:
        qty = -qty  # Alpaca sends shorts negative already; some answers do not
    return Position(symbol=p.symbol, qty=qty, avg_entry_price=_num(p.avg_entry_price))


def _to_order(o: AlpacaOrder) -> Order:
    if o.side is None or o.symbol is None:
        raise BrokerUnavailable(f"Alpaca order {o.id} has no symbol or side (not a simple order)")
    filled = _num(o.filled_qty)
    avg = o.filled_avg_price  # Alpaca may send "0" before a fill: no fill, no price
    return Order(
        client_order_id=o.client_order_id,
        broker_order_id=str(o.id),
        symbol=o.symbol,
        side=Side(o.side.value),
        qty=_num(o.qty),
        status=str(o.status.value),
        filled_qty=filled,
        filled_avg_price=None if filled == 0 or avg is None or avg == "" else float(avg),
        submitted_at=_utc(o.submitted_at),
    )
