"""The HTTP boundary's values: the platform-neutral request and response, refusals, and the strict
request bodies every route validates before anything reaches the core."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from strategy_engine.core.data_quality import finite
from strategy_engine.core.strategies.base import check_text

if TYPE_CHECKING:
    import flask

MAX_BODY_BYTES = 64 * 1024

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes  # adapters read at most MAX_BODY_BYTES + 1 bytes; more is refused with 413
    #: Did the platform itself authenticate this request? None: it cannot tell (Cloud Run);
    #: False: it says not (a Lambda URL without AWS_IAM), so the setting is not trusted.
    platform_authenticated: bool | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    def json_text(self) -> str:
        return json.dumps(finite(self.body), default=str, separators=(",", ":"), allow_nan=False)


class HttpError(Exception):
    """A refusal with its status; `fields` name what was wrong in the request."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.fields, self.headers = status, message, fields, headers or {}

    @classmethod
    def invalid(cls, name: str, message: str) -> HttpError:
        """400 naming the field."""
        return cls(400, f"{name}: {message}", fields=[{"field": name, "message": message}])

    def response(self) -> HttpResponse:
        extra = {"fields": self.fields} if self.fields else {}
        return HttpResponse(self.status, {"error": self.message, **extra}, self.headers)


class Misconfigured(Exception):
    """The deployment is missing a setting: a 500 for the caller, the reason in the log.

    `detail`: the driver's text, scrubbed of secrets, for the log only."""

    detail: str | None = None


def error_fields(exc: Exception) -> dict[str, str | None]:
    """What the log of an unexpected error says: a Misconfigured's reason (no other message, which
    could quote anything) and any error's scrubbed `detail`."""
    return {
        "error": str(exc) if isinstance(exc, Misconfigured) else None,
        "detail": getattr(exc, "detail", None),
    }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


Text = Annotated[str, AfterValidator(check_text)]  # no NUL or other control character


class TickBody(_Strict):
    minute: Text | None = None  # ISO 8601 with an offset; parsed by calendar.parse_minute
    strategy: Text | None = Field(default=None, min_length=1, max_length=200)


class WebhookPayload(_Strict):
    """Supabase's database webhook (supabase_functions.http_request): one row event."""

    type: str
    table: str
    schema_: str = Field(alias="schema")
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    user_id: str | None = None  # in Supabase's documented type, not sent by its trigger function


class BarRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # a table row: other columns are fine
    ts: str
    symbol: str


class SchedulerEvent(_Strict):
    """EventBridge Scheduler's input: {"source": "scheduler", "minute": <aws.scheduler.scheduled-time>}."""

    source: Literal["scheduler"]
    minute: str


def validate(model: type[M], data: bytes | dict[str, Any], prefix: str = "") -> M:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [
            {"field": ".".join([prefix, *map(str, e["loc"])]).strip(".") or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = fields[0]
        raise HttpError(400, f"{first['field']}: {first['message']}", fields=fields) from None
    except OverflowError:  # a validator's date arithmetic (year 1 at +14:00 has no UTC minute)
        raise HttpError.invalid(prefix or "body", "a time is out of range") from None


def from_flask(request: flask.Request) -> HttpRequest:
    """A Flask (functions-framework, `serve`) request, its body read up to the limit + 1 byte."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return HttpRequest(request.method, request.path, headers, request.stream.read(MAX_BODY_BYTES + 1))


def to_flask(resp: HttpResponse) -> flask.Response:
    import flask

    return flask.Response(
        resp.json_text(), status=resp.status, headers=dict(resp.headers), mimetype="application/json"
    )


RETRY_AFTER_SECONDS = 5  # inside the minute: Cloud Scheduler's own backoff starts at 5 s


def retry_later(body: dict[str, Any]) -> HttpResponse:
    """503 with Retry-After: an outage the scheduler's retry of the same minute may get past."""
    return HttpResponse(503, body, {"Retry-After": str(RETRY_AFTER_SECONDS)})
