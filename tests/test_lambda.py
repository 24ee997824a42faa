"""functions/lambda_handler.py: EventBridge Scheduler events and Function URL requests reach the
same handlers with the same status codes; secrets come from Secrets Manager (moto), once."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions import lambda_handler
from strategy_engine.http import api
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from tests.conftest import seed
from tests.http_support import BROKER_DOWN, SECRET, closed_port_url, configure, counts
from tests.test_exactly_once import SYMS, T, entry_setup

EVENT = {"source": "scheduler", "minute": "2025-06-13T15:00:00Z"}  # infra/aws/scheduler.tf's input


class Context:
    aws_request_id = "8f5e0c2a-lambda-request"


def url_event(
    method: str, path: str, body: Any = None, *, iam: bool = True, b64: bool = False, **headers: str
) -> dict[str, Any]:
    """A Function URL event, payload format 2.0 (headers lower-cased by the platform)."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    if b64 and text is not None:
        text = base64.b64encode(text.encode()).decode()
    hdrs = {
        "content-type": "application/json",
        **{k.lower().replace("_", "-"): v for k, v in headers.items()},
    }
    authorizer = {"iam": {"accountId": "123456789012", "userArn": "arn:aws:iam::123456789012:user/ops"}}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "authorizer": authorizer if iam else None,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9"},
            "requestId": "url-req-1",
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": text,
        "isBase64Encoded": b64,
    }


def call(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    out = lambda_handler.handler(event, Context())
    return out["statusCode"], json.loads(out["body"]), out["headers"]


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """As infra/aws/main.tf deploys it: platform auth trusted (IAM), no bearer secret."""
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    configure(monkeypatch, db_url, secret=None, trust=True)
    monkeypatch.setattr(lambda_handler, "_loaded", None)
    monkeypatch.delenv(lambda_handler.SECRET_VERSION_ENV, raising=False)
    yield db_url
    get_settings.cache_clear()


# ---- EventBridge Scheduler ---------------------------------------------------------------------


def test_scheduled_event_ticks_its_minute_and_a_redelivery_does_no_second_work(db: str) -> None:
    first = lambda_handler.handler(EVENT, Context())
    assert first["minute"] == T.isoformat() and first["trigger"] == "eventbridge" and first["orders"] == 3
    assert first["request_id"] == Context.aws_request_id  # ties the engine's lines to Lambda's
    again = lambda_handler.handler(dict(EVENT), Context())
    assert again["strategies"][0]["outcome"] == "already_processed"
    assert counts(db)["paper_trades"] == 3 and counts(db)["strategy_logs"] == 3


def test_scheduled_time_with_seconds_is_floored(db: str) -> None:
    out = lambda_handler.handler({"source": "scheduler", "minute": "2025-06-13T15:00:59.9Z"}, Context())
    assert out["minute"] == T.isoformat()


def test_scheduled_tick_database_down_raises_for_a_retry(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, closed_port_url(), secret=None, trust=True)
    with pytest.raises(lambda_handler.ScheduledTickFailed, match="database unavailable"):
        lambda_handler.handler(EVENT, Context())


def test_scheduled_tick_broker_down_raises_and_writes_nothing_for_the_minute(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = api.Services.from_settings

    def with_broker_down(database_url: str | None = None) -> api.Services:
        return dataclasses.replace(real(database_url), deps=lambda: BROKER_DOWN)

    monkeypatch.setattr(api.Services, "from_settings", with_broker_down)
    before = counts(db)
    with pytest.raises(lambda_handler.ScheduledTickFailed, match='"status":"failed"'):
        lambda_handler.handler(EVENT, Context())
    after = counts(db)
    assert (after["strategy_logs"], after["paper_trades"]) == (
        before["strategy_logs"],
        before["paper_trades"],
    )


@pytest.mark.parametrize(
    "event",
    [
        {"source": "scheduler"},
        {"source": "aws.events", "minute": "2025-06-13T15:00:00Z"},
        {"source": "scheduler", "minute": "2025-06-13T15:00:00"},
        {"source": "scheduler", "minute": 1749826800},
        {"source": "scheduler", "minute": "2025-06-13T15:00:00Z", "attempt": "1"},
        {},
    ],
)
def test_malformed_scheduler_event_returns_400_without_raising(db: str, event: dict[str, Any]) -> None:
    before = counts(db)
    out = lambda_handler.handler(event, Context())
    assert "error" in out and out["request_id"]
    assert counts(db) == before


# ---- Function URL (payload 2.0) ----------------------------------------------------------------


def test_url_tick_and_health(db: str) -> None:
    status, doc, headers = call(url_event("POST", "/tick", {"minute": "2025-06-13T11:00:00-04:00"}))
    assert status == 200 and doc["orders"] == 3 and headers["content-type"] == "application/json"
    assert doc["request_id"] == Context.aws_request_id
    status, doc, _ = call(url_event("GET", "/health"))
    assert status == 200 and doc["last_run"]["minute"] == T.isoformat()


def test_url_base64_body(db: str) -> None:
    status, doc, _ = call(url_event("POST", "/tick/", {"minute": T.isoformat()}, b64=True))
    assert status == 200 and doc["minute"] == T.isoformat()
    status, doc, _ = call(url_event("POST", "/tick", "!!not base64!!", b64=True))
    assert status == 400 and doc["fields"][0]["field"] == "body"


def test_url_webhook_and_backfill(db: str) -> None:
    hook: dict[str, Any] = {"type": "INSERT", "table": "options_flow", "schema": "public", "record": {}}
    hook["old_record"] = None
    status, doc, _ = call(url_event("POST", "/webhook", hook))
    assert status == 200 and doc["status"] == "ignored"
    body = {
        "strategy": "nft",
        "start": "2025-06-13T13:30:00Z",
        "end": "2025-06-13T15:00:00Z",
        "report": False,
    }
    status, doc, _ = call(url_event("POST", "/backfill", body))
    assert status == 200 and doc["strategy"] == "nft"


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (url_event("GET", "/tick"), 405),
        (url_event("POST", "/backfill", {"strategy": "nft", "sweep": 1}), 400),
        (url_event("POST", "/tick", "minute=x", content_type="text/plain"), 415),
        (url_event("POST", "/tick", {"pad": "x" * 70_000}), 413),
        (url_event("POST", "/tick", {"minute": "2025-06-13T11:00:00-04:00", "strategy": "nope"}), 404),
        (url_event("POST", "/nope", {}), 404),
        (url_event("POST", "/", {}), 404),
    ],
)
def test_url_refusals_have_the_http_status_codes(db: str, event: dict[str, Any], status: int) -> None:
    before = counts(db)
    got, doc, _ = call(event)
    assert got == status and "error" in doc, doc
    assert counts(db) == before


def test_url_without_iam_does_not_trust_the_setting(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL switched to auth NONE while ENGINE_TRUST_PLATFORM_AUTH stays on: the bearer decides."""
    before = counts(db)
    assert call(url_event("POST", "/tick", {}, iam=False))[0] == 403  # no secret configured: fail closed
    configure(monkeypatch, db, secret=SECRET, trust=True)
    assert call(url_event("POST", "/tick", {}, iam=False, authorization="Bearer nope"))[0] == 401
    assert counts(db) == before
    ok = url_event("POST", "/tick", {"minute": T.isoformat()}, iam=False, authorization=f"Bearer {SECRET}")
    assert call(ok)[0] == 200


def test_url_database_down_then_503_with_retry_after(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, closed_port_url(), secret=None, trust=True)
    status, _, headers = call(url_event("POST", "/tick", {"minute": T.isoformat()}))
    assert status == 503 and headers["Retry-After"] == "5"


# ---- Secrets Manager ---------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def _secret(client: Any, doc: Any) -> str:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return str(client.create_secret(Name="strategy-engine/engine", SecretString=text)["ARN"])


def test_secrets_fetched_once_per_container(db: str, aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, None, secret=None, trust=False)  # nothing in the environment but the ARN
    doc = {
        "DATABASE_URL": db,
        "ENGINE_HTTP_SECRET": SECRET,
        "ALPACA_API_KEY": "PKSECRETSMANAGER01",
        "ALPACA_SECRET_KEY": "from-secrets-manager",
        "SOMETHING_ELSE": "ignored",
    }
    arn = _secret(aws, doc)
    monkeypatch.setenv(lambda_handler.SECRET_ARN_ENV, arn)
    assert lambda_handler.handler(EVENT, Context())["orders"] == 3
    settings = get_settings()
    assert (
        settings.engine_http_secret is not None and settings.engine_http_secret.get_secret_value() == SECRET
    )
    aws.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)  # a second fetch would now fail
    status, doc_out, _ = call(url_event("GET", "/health", authorization=f"Bearer {SECRET}"))
    assert status == 200 and doc_out["database"] == "ok"


def test_secret_unavailable_then_scheduled_raises_url_503_and_nothing_cached(
    db: str, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, None, secret=None, trust=True)
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:strategy-engine/engine-AbCdEf"
    monkeypatch.setenv(lambda_handler.SECRET_ARN_ENV, missing)
    with pytest.raises(lambda_handler.ScheduledTickFailed, match="ResourceNotFoundException"):
        lambda_handler.handler(EVENT, Context())
    status, doc, headers = call(url_event("GET", "/health"))
    assert status == 503 and headers["Retry-After"] and doc == {"error": "secrets unavailable"}
    monkeypatch.setenv(lambda_handler.SECRET_ARN_ENV, _secret(aws, {"DATABASE_URL": db}))
    assert call(url_event("GET", "/health"))[0] == 200


@pytest.mark.parametrize("content", ["not json", '["a"]', '{"DATABASE_URL": 5}'])
def test_malformed_secret_then_500_and_scheduled_raises(
    db: str, aws: Any, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    configure(monkeypatch, None, secret=None, trust=True)
    monkeypatch.setenv(lambda_handler.SECRET_ARN_ENV, _secret(aws, content))
    status, doc, _ = call(url_event("GET", "/health"))
    assert status == 500 and doc == {"error": "secrets unavailable"}
    with pytest.raises(lambda_handler.ScheduledTickFailed, match="JSON object of strings"):
        lambda_handler.handler(EVENT, Context())


def test_a_rotated_secret_version_is_fetched_by_version_id(
    db: str, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """infra/aws passes ENGINE_SECRET_VERSION = the version Terraform wrote: the container caches per
    (ARN, version), so a rotation (a new version id in the configuration) is read at once, and the
    version asked for is the one read, whatever AWSCURRENT says."""
    configure(monkeypatch, None, secret=None, trust=False)
    old = {"DATABASE_URL": db, "ENGINE_HTTP_SECRET": "bearer-before-rotation-01"}
    new = {"DATABASE_URL": db, "ENGINE_HTTP_SECRET": "bearer-after-rotation-02"}
    created = aws.create_secret(Name="strategy-engine/engine", SecretString=json.dumps(old))
    arn, old_version = str(created["ARN"]), str(created["VersionId"])
    monkeypatch.setenv(lambda_handler.SECRET_ARN_ENV, arn)
    monkeypatch.setenv(lambda_handler.SECRET_VERSION_ENV, old_version)

    def bearer() -> str:
        lambda_handler.load_secrets()
        value = get_settings().engine_http_secret
        assert value is not None
        return value.get_secret_value()

    assert bearer() == old["ENGINE_HTTP_SECRET"]
    rotated = aws.put_secret_value(SecretId=arn, SecretString=json.dumps(new))  # now AWSCURRENT
    new_version = str(rotated["VersionId"])
    assert new_version != old_version
    # Same configuration: the warm container keeps the version it was configured with.
    assert bearer() == old["ENGINE_HTTP_SECRET"]
    # The redeployed configuration names the new version: fetched again, by that id.
    monkeypatch.setenv(lambda_handler.SECRET_VERSION_ENV, new_version)
    assert bearer() == new["ENGINE_HTTP_SECRET"]
    # Fetched by VersionId, not AWSCURRENT: pointing back at the old id reads the old value.
    monkeypatch.setenv(lambda_handler.SECRET_VERSION_ENV, old_version)
    assert bearer() == old["ENGINE_HTTP_SECRET"]
    status, _, _ = call(
        url_event("GET", "/health", iam=False, authorization=f"Bearer {old['ENGINE_HTTP_SECRET']}")
    )
    assert status == 200


def test_an_unknown_secret_version_is_unavailable_and_not_cached(
    db: str, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, None, secret=None, trust=True)
    arn = _secret(aws, {"DATABASE_URL": db})
    monkeypatch.setenv(lambda_handler.SECRET_ARN_ENV, arn)
    monkeypatch.setenv(lambda_handler.SECRET_VERSION_ENV, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(lambda_handler.ScheduledTickFailed, match="ResourceNotFoundException"):
        lambda_handler.handler(EVENT, Context())
    monkeypatch.delenv(lambda_handler.SECRET_VERSION_ENV)
    assert call(url_event("GET", "/health"))[0] == 200
