"""AWS Lambda entry point (`functions.lambda_handler.handler`): two kinds of event, one core.

- EventBridge Scheduler invokes the function asynchronously with the schedule's input,
  `{"source": "scheduler", "minute": "<aws.scheduler.scheduled-time>"}`: the same time on every
  retry of one scheduled invocation, so T is stable. IAM (the scheduler's role) authorised the
  invocation; there is no bearer. A tick that ends in 5xx (a database or broker outage) RAISES
  `ScheduledTickFailed`, because only a raised error is a failed invocation: Lambda records it
  (Errors metric, on-failure destination) and retries the event per the function's event-invoke
  config (maximum_retry_attempts, maximum_event_age_in_seconds; Lambda's retries come 1 and 2
  minutes later). The schedule's own retry_policy covers delivery only: the invocation is
  asynchronous, so Scheduler has succeeded once Lambda queued the event. A retry carries the same
  minute, so the engine redoes only what the outage left undone. A malformed event returns its
  400 without raising: a retry cannot fix it.
- A Function URL request (payload format 2.0): `rawPath` routes /tick, /backfill, /webhook,
  /health and /ready; headers arrive in lower case; the body may be base64. It goes through the same
  `api.handle` as the functions-framework targets, with the same status codes.
  `platform_authenticated` is true only when the event carries an IAM authorizer (AWS_IAM auth),
  so ENGINE_TRUST_PLATFORM_AUTH is not trusted on a URL whose auth type is NONE.

Secrets: ENGINE_SECRET_ARN names one Secrets Manager secret, a JSON object of settings
(DATABASE_URL, ALPACA_API_KEY, ALPACA_SECRET_KEY, ENGINE_HTTP_SECRET, and the key pairs
ALPACA_<REF>_API_KEY / ALPACA_<REF>_SECRET_KEY that broker accounts name by credentials_ref), and
ENGINE_SECRET_VERSION the version of it to read (infra/aws sets it to the version Terraform wrote,
so a rotation changes the function's configuration and Lambda starts fresh containers on it). It
is fetched by VersionId with boto3 on the first invocation of a container and kept (in the
environment the settings read), keyed on (ARN, version): a container that sees another version
fetches again. Without a version the secret's current version (AWSCURRENT) is read. A failed
fetch is not cached.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Any

from strategy_engine import logs
from strategy_engine.core.errors import Unavailable
from strategy_engine.http import api
from strategy_engine.http.messages import RETRY_AFTER_SECONDS
from strategy_engine.settings import Settings, get_settings, is_credential_setting

SECRET_ARN_ENV = "ENGINE_SECRET_ARN"  # noqa: S105 - the variable's name, not a secret
SECRET_VERSION_ENV = "ENGINE_SECRET_VERSION"  # noqa: S105 - the variable's name, not a secret
# (ARN, version id) of the secret whose values are in os.environ (per container).
_loaded: tuple[str, str | None] | None = None

logs.configure()


class ScheduledTickFailed(RuntimeError):
    """Raised so that Lambda counts the scheduled tick as failed (and may retry it)."""


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    is_url = _is_function_url(event)
    try:
        load_secrets()
    except (Unavailable, api.Misconfigured) as exc:
        logs.event("secrets unavailable", level=logging.ERROR, error=str(exc))
        if not is_url:
            raise ScheduledTickFailed(str(exc)) from None
        status = 503 if isinstance(exc, Unavailable) else 500
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else {}
        return _url_response(api.HttpResponse(status, {"error": "secrets unavailable"}, retry))
    request_id = getattr(context, "aws_request_id", None)
    if is_url:
        req = _url_request(event, request_id)
        return _url_response(api.handle(req.path.strip("/"), req))
    resp = api.handle_scheduled(event, request_id)
    if resp.status >= 500:
        raise ScheduledTickFailed(resp.json_text())
    return resp.body


def _is_function_url(event: Any) -> bool:
    ctx = event.get("requestContext") if isinstance(event, dict) else None
    return isinstance(ctx, dict) and isinstance(ctx.get("http"), dict) and "rawPath" in event


def _url_request(event: dict[str, Any], request_id: str | None) -> api.HttpRequest:
    ctx = event["requestContext"]
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    text = str(event.get("body") or "")
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            body = b"\xff"  # undecodable: not UTF-8, so validation refuses it with a 400
    else:
        body = text.encode("utf-8", "surrogatepass")
    authorizer = ctx.get("authorizer") or {}
    return api.HttpRequest(
        method=str(ctx["http"].get("method", "")),
        path=str(event.get("rawPath") or "/"),
        headers=headers,
        body=body[: api.MAX_BODY_BYTES + 1],
        platform_authenticated=isinstance(authorizer, dict) and bool(authorizer.get("iam")),
        request_id=request_id,
    )


def _url_response(resp: api.HttpResponse) -> dict[str, Any]:
    return {
        "statusCode": resp.status,
        "headers": {"content-type": "application/json", **resp.headers},
        "body": resp.json_text(),
        "isBase64Encoded": False,
    }


def load_secrets() -> None:
    """Put the secret's settings into the environment once per container and secret version
    (no-op without an ARN). Raises Unavailable (Secrets Manager unreachable or refusing) or
    api.Misconfigured (not a JSON object of strings); nothing is cached then."""
    global _loaded  # noqa: PLW0603 - the per-container cache
    arn = os.environ.get(SECRET_ARN_ENV)
    if not arn:
        return
    wanted = (arn, os.environ.get(SECRET_VERSION_ENV) or None)
    if wanted == _loaded:
        return
    doc = _parse_secret(_fetch(*wanted))
    known = {name.upper() for name in Settings.model_fields}
    taken = {k for k in doc if k.upper() in known or is_credential_setting(k)}
    unknown = sorted(k for k in doc if k not in taken)
    if unknown:
        logs.event("secret keys ignored", level=logging.WARNING, keys=unknown)
    for key, value in doc.items():
        if key in taken:
            os.environ[key.upper()] = value
    get_settings.cache_clear()
    _loaded = wanted


def _fetch(arn: str, version: str | None) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parts = arn.split(":")
    region = parts[3] if arn.startswith("arn:") and len(parts) > 6 else None
    which = {"SecretId": arn, **({"VersionId": version} if version else {})}
    try:
        found = boto3.client("secretsmanager", region_name=region).get_secret_value(**which)
    except ClientError as exc:
        raise Unavailable(f"secrets manager: {exc.response.get('Error', {}).get('Code', 'error')}") from None
    except BotoCoreError as exc:
        raise Unavailable(f"secrets manager: {type(exc).__name__}") from None
    text = found.get("SecretString")
    if text is None:
        raise api.Misconfigured(f"{SECRET_ARN_ENV}: the secret has no SecretString")
    return text


def _parse_secret(text: str) -> dict[str, str]:
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise api.Misconfigured(f"{SECRET_ARN_ENV}: the secret must be a JSON object of strings")
    return {str(k): v for k, v in doc.items()}
