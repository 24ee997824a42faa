"""Deploy as code, checked without a cloud account.

- `terraform fmt -check` on every stack, and `terraform validate` of the AWS stack against the
  hashicorp/aws provider in the machine's local filesystem mirror (skipped, with the reason,
  where Terraform or the mirror is missing; the Google stack is validated only if the google
  and time providers are mirrored too).
- `terraform test` of the AWS stack (infra/aws/tests/*.tftest.hcl): a real plan against the
  mirrored provider, offline, that renders the schedule's input and the role trust the way an
  apply would send them; and the same plan with the input built by `jsonencode` fails.
- The GCP retry numbers, re-derived from Cloud Scheduler's documented semantics: a failing
  minute's retries end inside that minute.
- The HCL, parsed with python-hcl2: the resources exist; the schedule fires every trading
  minute in America/New_York with a retry policy; the scheduler's identity can invoke the tick
  and nothing else; the runtime identity can read its secrets and nothing else; secrets reach
  the functions by reference only; no secret value is written anywhere in infra/.
- Supabase: config.toml in the CLI layout, and cron.sql run against stand-ins for pg_cron,
  pg_net and Vault on the test Postgres: it refuses without the Vault secrets, schedules once
  however often it runs, and its job posts to the Vault URL with the Vault bearer.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import psycopg
import pytest
from hcl2 import SerializationOptions

from functions import lambda_handler
from strategy_engine import engine, logs
from strategy_engine.engine import Deps
from strategy_engine.settings import Settings
from strategy_engine.store import connect
from tests.conftest import seed
from tests.http_support import BROKER_DOWN
from tests.log_filters import cloudwatch_json_matches, logging_query_matches
from tests.test_exactly_once import SYMS, T, entry_setup

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
MIRROR = Path(os.environ.get("TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
SECRET_ENV = {"DATABASE_URL", "ALPACA_API_KEY", "ALPACA_SECRET_KEY", "ENGINE_HTTP_SECRET"}
SECRET_VARIABLES = {"database_url", "alpaca_api_key", "alpaca_secret_key", "engine_http_secret"}
TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="terraform is not installed on this machine")


# ---- loading --------------------------------------------------------------------------------


class Stack:
    """Every block of one Terraform directory, merged across its files."""

    def __init__(self, folder: Path) -> None:
        options = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
        self.blocks: dict[str, list[Any]] = {}
        for path in sorted(folder.glob("*.tf")):
            with path.open() as fh:
                for kind, items in hcl2.load(fh, serialization_options=options).items():
                    self.blocks.setdefault(kind, []).extend(items)

    def _typed(self, kind: str) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for item in self.blocks.get(kind, []):
            for rtype, named in item.items():
                out.setdefault(rtype, {}).update(named)
        return out

    @property
    def resources(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self._typed("resource")

    @property
    def data(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self._typed("data")

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        assert name in self.resources.get(rtype, {}), f"missing resource {rtype}.{name}"
        return self.resources[rtype][name]

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {k: v for item in self.blocks.get("variable", []) for k, v in item.items()}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {k: v for item in self.blocks.get("output", []) for k, v in item.items()}

    @property
    def locals(self) -> dict[str, Any]:
        return {k: v for item in self.blocks.get("locals", []) for k, v in item.items()}

    def providers(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for block in self.blocks.get("terraform", []):
            for req in block.get("required_providers", []):
                found.update(req)
        return found


@pytest.fixture(scope="module")
def gcp() -> Stack:
    return Stack(INFRA / "gcp")


@pytest.fixture(scope="module")
def aws() -> Stack:
    return Stack(INFRA / "aws")


def first(block: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """A nested block parses as a one-element list."""
    return block[0] if isinstance(block, list) else block


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    else:
        yield path, node


# ---- both stacks ----------------------------------------------------------------------------


@needs_terraform
def test_terraform_fmt_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(TERRAFORM), "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        env=_tf_env(tmp_path, mirror=False),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("stack", "provider", "constraint"),
    [("gcp", "google", "~> 7.0"), ("gcp", "time", "~> 0.13"), ("aws", "aws", "~> 5.100")],
)
def test_providers_are_pinned(stack: str, provider: str, constraint: str) -> None:
    s = Stack(INFRA / stack)
    req = s.providers()[provider]
    assert req["source"] == f"hashicorp/{provider}"
    assert req["version"] == constraint
    assert any(b.get("required_version", "").startswith(">= 1.11") for b in s.blocks["terraform"])


@pytest.mark.parametrize("stack", ["gcp", "aws"])
def test_every_variable_and_output_is_described(stack: str) -> None:
    s = Stack(INFRA / stack)
    assert s.variables and s.outputs
    for name, body in {**s.variables, **s.outputs}.items():
        assert len(body.get("description", "")) > 10, f"{name} has no description"


@pytest.mark.parametrize("stack", ["gcp", "aws"])
def test_secret_variables_are_ephemeral_sensitive_and_have_no_default(stack: str) -> None:
    variables = Stack(INFRA / stack).variables
    for name in SECRET_VARIABLES:
        body = variables[name]
        assert body["sensitive"] is True, name
        assert body["ephemeral"] is True, name  # never in a plan file or the state
        assert "default" not in body, name


# Values that look like credentials: cloud keys, private keys, JWTs (Supabase keys), Alpaca key
# ids, Postgres URLs with a password, a literal bearer token.
SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(r"\b[PA]K[A-Z0-9]{16,}\b"),
    re.compile(r"sb_secret_[A-Za-z0-9]+"),
    re.compile(r"postgres(?:ql)?://[^\s:/@$]+:[^\s@$<]+@"),
    re.compile(r"Bearer [A-Za-z0-9._~+/-]{8,}"),
]


def _infra_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and ".terraform" not in p.parts)


@pytest.mark.parametrize("path", _infra_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_no_secret_literal_in_infra(path: Path) -> None:
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), f"{path}: looks like a secret: {pattern.pattern}"


@pytest.mark.parametrize("stack", ["gcp", "aws"])
def test_secret_attributes_hold_references_not_literals(stack: str) -> None:
    """Any attribute named like a secret value is an expression, never a literal string."""
    s = Stack(INFRA / stack)
    secretish = re.compile(r"(?:^|_)(secret_data|secret_string|password|token|api_key|secret_key)(?:_wo)?$")
    for path, value in walk(s.resources):
        leaf = path.rsplit(".", 1)[-1]
        if secretish.search(leaf) and isinstance(value, str):
            assert value.startswith("${"), f"{stack}{path} = {value!r} is a literal"
    # The stored-in-state forms are not used at all: only the write-only ones.
    text = "\n".join(p.read_text() for p in (INFRA / stack).glob("*.tf"))
    assert not re.search(r"^\s*(secret_data|secret_string)\s*=", text, re.M)


# ---- Google Cloud ---------------------------------------------------------------------------


def test_gcp_functions_cover_the_four_entry_points(gcp: Stack) -> None:
    fn = gcp.resource("google_cloudfunctions2_function", "engine")
    assert fn["for_each"] == "${local.entry_points}"
    assert set(gcp.locals["entry_points"]) == {"tick", "backfill", "webhook", "health"}
    build = first(fn["build_config"])
    assert build["entry_point"] == "${each.key}"
    assert build["runtime"] == "${var.runtime}"
    assert gcp.variables["runtime"]["default"] in {"python311", "python312"}
    source = first(first(build["source"])["storage_source"])
    assert source["object"] == "${google_storage_bucket_object.source.name}"
    assert "var.source_zip" in gcp.resource("google_storage_bucket_object", "source")["source"]
    assert gcp.locals["entry_points"]["tick"]["timeout_seconds"] == "${local.tick_deadline_seconds}"
    assert gcp.locals["tick_deadline_seconds"] < 60


def test_gcp_secrets_reach_the_functions_as_references(gcp: Stack) -> None:
    names = set(re.findall(r'\\?"([A-Z_]+)\\?"', gcp.locals["secret_names"]))
    assert names == SECRET_ENV
    assert set(gcp.locals["secret_values"]) == SECRET_ENV
    assert gcp.resource("google_secret_manager_secret", "engine")["for_each"] == "${local.secret_names}"
    version = gcp.resource("google_secret_manager_secret_version", "engine")
    assert version["secret_data_wo"] == "${local.secret_values[each.value]}"
    assert version["secret_data_wo_version"] == "${var.secrets_version}"

    service = first(gcp.resource("google_cloudfunctions2_function", "engine")["service_config"])
    dynamic = first(service["dynamic"])["secret_environment_variables"]
    assert dynamic["for_each"] == "${local.secret_names}"
    content = first(dynamic["content"])
    assert content["key"] == "${secret_environment_variables.value}"
    assert content["secret"].startswith("${google_secret_manager_secret.engine[")
    assert content["version"].startswith("${google_secret_manager_secret_version.engine[")
    # Plain environment carries no secret.
    assert not set(service["environment_variables"]) & SECRET_ENV


def test_gcp_runtime_identity_reads_exactly_its_secrets(gcp: Stack) -> None:
    fn = gcp.resource("google_cloudfunctions2_function", "engine")
    assert first(fn["service_config"])["service_account_email"] == "${google_service_account.runtime.email}"
    grant = gcp.resource("google_secret_manager_secret_iam_member", "runtime")
    assert grant["for_each"] == "${local.secret_names}"
    assert grant["secret_id"] == "${google_secret_manager_secret.engine[each.value].id}"
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    assert grant["member"] == "serviceAccount:${google_service_account.runtime.email}"
    # No project-wide role for the runtime or the scheduler identity.
    for name, body in gcp.resources.get("google_project_iam_member", {}).items():
        assert "google_service_account.runtime" not in body["member"], name
        assert "google_service_account.scheduler" not in body["member"], name


def test_gcp_scheduler_identity_may_only_invoke_the_tick(gcp: Stack) -> None:
    grants = [
        (rtype, name, body)
        for rtype, named in gcp.resources.items()
        if rtype.endswith("_iam_member") or rtype.endswith("_iam_binding")
        for name, body in named.items()
        if "google_service_account.scheduler" in json.dumps(body)
    ]
    assert len(grants) == 1, grants
    rtype, _, body = grants[0]
    assert rtype == "google_cloud_run_v2_service_iam_member"
    assert body["name"] == '${google_cloudfunctions2_function.engine["tick"].name}'
    assert body["role"] == "roles/run.invoker"
    assert body["member"] == "serviceAccount:${google_service_account.scheduler.email}"


def test_gcp_only_listed_entry_points_are_public(gcp: Stack) -> None:
    public = gcp.resource("google_cloud_run_v2_service_iam_member", "public")
    assert public["for_each"] == "${var.public_entry_points}"
    assert public["member"] == "allUsers"
    assert gcp.variables["public_entry_points"]["default"] == ["webhook"]
    env = first(gcp.resource("google_cloudfunctions2_function", "engine")["service_config"])
    trust = env["environment_variables"]["ENGINE_TRUST_PLATFORM_AUTH"]
    assert "contains(var.public_entry_points, each.key)" in trust  # public ones check the bearer


def test_gcp_schedule_every_trading_minute_in_new_york_with_oidc_and_retries(gcp: Stack) -> None:
    job = gcp.resource("google_cloud_scheduler_job", "tick")
    assert job["time_zone"] == "America/New_York"
    assert job["schedule"] == "${var.tick_schedule}"
    assert gcp.variables["tick_schedule"]["default"] == "* 9-15 * * 1-5"
    retry = first(job["retry_config"])
    assert retry["retry_count"] == "${local.tick_retry.retry_count}"
    assert retry["max_retry_duration"] == "${local.tick_retry.max_retry_seconds}s"
    assert job["attempt_deadline"] == "${local.tick_retry.attempt_deadline_seconds}s"

    target = first(job["http_target"])
    assert target["http_method"] == "POST"
    assert gcp.locals["tick_url"] == '${google_cloudfunctions2_function.engine["tick"].service_config[0].uri}'
    assert target["uri"] == "${local.tick_url}"
    oidc = first(target["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"
    assert oidc["audience"] == target["uri"]
    # The operator's pause survives the next apply.
    assert first(job["lifecycle"])["ignore_changes"] == ["paused"]


# Cloud Scheduler's retry semantics ("Retry jobs", cloud.google.com/scheduler/docs/configuring/retry-jobs):
# retries go on "until both limits are reached" (retry_count and max_retry_duration, the latter
# measured from the first attempt); the interval starts at min_backoff, doubles max_doublings
# times, then grows linearly up to max_backoff; an attempt fails at the latest when
# attempt_deadline passes without an answer.
def _backoffs(min_b: float, max_b: float, doublings: int) -> Iterator[float]:
    """Scheduler's waits before retry 1, 2, ...: min_backoff, doubled max_doublings times, then
    growing linearly by the last doubled interval, capped at max_backoff."""
    interval = step = float(min_b)
    for n in itertools.count():
        yield min(interval, max_b)
        if n < doublings:
            interval *= 2
            step = interval
        else:
            interval += step


def _latest_retry_end(
    *, deadline: float, count: int, min_b: float, max_b: float, doublings: int, max_duration: float
) -> float:
    """A bound on when the last attempt of one execution ends, in seconds after the first one.

    A failed attempt is retried while fewer than `count` retries were made OR less than
    `max_duration` has passed (retries stop only when both limits are reached). An attempt fails
    at the latest `deadline` after it starts. So the count-th retry starts at the latest when every
    attempt before it ran to its deadline, and any later retry follows a failure before
    `max_duration` by at most `max_b`; the last attempt then runs up to `deadline`.
    """
    assert max_duration > 0, "0 means an unlimited retry duration"
    waits = list(itertools.islice(_backoffs(min_b, max_b, doublings), count))
    last_counted_start = count * deadline + sum(waits)
    last_uncounted_start = max_duration + max_b
    return max(last_counted_start, last_uncounted_start) + deadline


def test_latest_retry_end_follows_the_documented_semantics() -> None:
    # The documentation's own example: min 10 s, max 300 s, max_doublings 3.
    assert list(itertools.islice(_backoffs(10, 300, 3), 8)) == [10, 20, 40, 80, 160, 240, 300, 300]
    # By hand: a slow first attempt and one retry (20 + 5 + 20), or fast failures until 20 s.
    assert _latest_retry_end(deadline=20, count=1, min_b=5, max_b=5, doublings=0, max_duration=20) == 45
    # More counted retries than fit: 3 x (20 + 5) + 20 runs into the next minute.
    assert _latest_retry_end(deadline=20, count=3, min_b=5, max_b=5, doublings=0, max_duration=20) == 95
    # A long retry duration keeps fast failures retrying after the count is spent: 50 + 5 + 20.
    assert _latest_retry_end(deadline=20, count=1, min_b=5, max_b=5, doublings=0, max_duration=50) == 75
    # Doubling capped by max_backoff: 1 + 10 + 1 + min(20, 15) + 1.
    assert _latest_retry_end(deadline=1, count=2, min_b=10, max_b=15, doublings=3, max_duration=1) == 28


def test_gcp_tick_retries_end_inside_the_minute_and_the_deadline_is_the_timeout(gcp: Stack) -> None:
    deadline = gcp.locals["tick_deadline_seconds"]
    retry = {
        k: (deadline if v == "${local.tick_deadline_seconds}" else v)
        for k, v in gcp.locals["tick_retry"].items()
    }
    job = gcp.resource("google_cloud_scheduler_job", "tick")
    config = first(job["retry_config"])
    # The job reads every number from the one local the arithmetic below uses.
    assert config["min_backoff_duration"] == "${local.tick_retry.min_backoff_seconds}s"
    assert config["max_backoff_duration"] == "${local.tick_retry.max_backoff_seconds}s"
    assert config["max_doublings"] == "${local.tick_retry.max_doublings}"
    # Attempt deadline == the tick function's timeout: no retry of a tick that is still working
    # within its own time, no wait for an answer past it. Scheduler allows 15 s .. 30 min.
    assert retry["attempt_deadline_seconds"] == deadline
    assert gcp.locals["entry_points"]["tick"]["timeout_seconds"] == "${local.tick_deadline_seconds}"
    assert 15 <= deadline < 60
    assert 1 <= retry["retry_count"] <= 5 and retry["max_retry_seconds"] > 0
    end = _latest_retry_end(
        deadline=deadline,
        count=retry["retry_count"],
        min_b=retry["min_backoff_seconds"],
        max_b=retry["max_backoff_seconds"],
        doublings=retry["max_doublings"],
        max_duration=retry["max_retry_seconds"],
    )
    # The schedule fires every minute: the retries of minute T end at least 10 s before T + 1 fires.
    assert gcp.variables["tick_schedule"]["default"].split()[0] == "*"
    assert end <= 60 - 10, end
    # The broker gives up before the deadline, so an outage answers 503 (retried), not 504.
    budget = gcp.locals["tick_broker_budget_seconds"]
    assert (
        gcp.locals["entry_points"]["tick"]["broker_budget_seconds"] == "${local.tick_broker_budget_seconds}"
    )
    assert budget + 5 <= deadline
    # Concurrency the tick service must admit (one request per instance): an attempt that timed
    # out keeps running on its instance (504 to Scheduler, the instance "is not terminated"), so
    # all retry_count + 1 attempts of minute T can be in flight at once, plus the first attempt
    # of T + 1. With fewer instances a retry queues and fails 429 instead of answering `busy`
    # ("About instance autoscaling": a request waits for an instance up to 10 s, then 429).
    tick = gcp.locals["entry_points"]["tick"]
    assert (
        first(gcp.resource("google_cloudfunctions2_function", "engine")["service_config"])[
            "max_instance_request_concurrency"
        ]
        == 1
    )
    assert tick["max_instances"] >= retry["retry_count"] + 2, tick["max_instances"]
    env = first(gcp.resource("google_cloudfunctions2_function", "engine")["service_config"])[
        "environment_variables"
    ]
    assert env["ALPACA_RETRY_BUDGET_SECONDS"] == "${tostring(each.value.broker_budget_seconds)}"
    assert "alpaca_retry_budget_seconds" in Settings.model_fields  # the variable the function reads
    # Runs are closed as abandoned only after twice the longest timeout of a function that ticks.
    assert env["ENGINE_RUN_TIMEOUT_SECONDS"] == "${tostring(local.run_timeout_seconds)}"
    assert gcp.locals["run_timeout_seconds"] == (
        "${2 * max(local.tick_deadline_seconds, local.entry_points.webhook.timeout_seconds)}"
    )
    ticking = [gcp.locals["tick_deadline_seconds"], gcp.locals["entry_points"]["webhook"]["timeout_seconds"]]
    assert 2 * max(ticking) == 110 > max(ticking)


def test_gcp_secret_rotation_creates_before_it_disables(gcp: Stack) -> None:
    version = gcp.resource("google_secret_manager_secret_version", "engine")
    assert first(version["lifecycle"])["create_before_destroy"] is True
    assert version["deletion_policy"] == "DISABLE"  # provider default DELETE destroys the data


def test_gcp_build_identity_has_the_documented_roles_only(gcp: Stack) -> None:
    grant = gcp.resource("google_project_iam_member", "build")
    assert grant["for_each"] == "${local.build_roles}"
    assert grant["member"] == "serviceAccount:${google_service_account.build.email}"
    roles = set(re.findall(r'"(roles/[a-zA-Z.]+)"', gcp.locals["build_roles"].replace('\\"', '"')))
    # As Google's gen2 page and the provider's "Cloudfunctions2 Basic Builder" example grant them.
    assert roles == {"roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectAdmin"}
    text = "\n".join(p.read_text() for p in (INFRA / "gcp").glob("*.tf"))
    assert '"roles/cloudbuild.builds.builder"' not in text
    fn = gcp.resource("google_cloudfunctions2_function", "engine")
    assert first(fn["build_config"])["service_account"] == "${google_service_account.build.id}"


def test_gcp_first_apply_order_apis_then_accounts_then_grants_then_wait(gcp: Stack) -> None:
    services = gcp.locals["services"]
    for api in ("iam.googleapis.com", "cloudbuild.googleapis.com", "monitoring.googleapis.com"):
        assert f'\\"{api}\\"' in services or f'"{api}"' in services, api
    for name in ("runtime", "scheduler", "build"):
        account = gcp.resource("google_service_account", name)
        assert account["depends_on"] == ["${google_project_service.enabled}"], name
    sleep = gcp.resource("time_sleep", "iam_propagation")
    assert sleep["create_duration"] == "60s"  # the provider's own Cloud Functions example
    assert set(sleep["depends_on"]) == {
        "${google_project_iam_member.build}",
        "${google_secret_manager_secret_iam_member.runtime}",
    }
    fn = gcp.resource("google_cloudfunctions2_function", "engine")
    assert "${time_sleep.iam_propagation}" in fn["depends_on"]
    assert "${google_project_service.enabled}" in fn["depends_on"]


@pytest.fixture
def engine_lines(db_url: str) -> dict[str, list[dict[str, Any]]]:
    """The JSON lines strategy_engine.logs writes for two real ticks of minute T on the test
    database: one with the broker down (the strategy's minute fails, the run ends `failed`), then
    the retry with the broker back (the run ends `ok`). A run left `running` two hours earlier by
    a dead process is closed by the first: its `run abandoned` line is `abandoned`."""
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
        s.execute(
            "insert into engine_runs (id, trigger, minute, status, started_at)"
            " values (gen_random_uuid(), 'scheduler', %s, 'running', now() - interval '2 hours')",
            (T,),
        )
    lines: dict[str, list[dict[str, Any]]] = {}
    for name, deps in (("failed", BROKER_DOWN), ("ok", Deps())):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.JsonFormatter())
        level = logs.LOGGER.level
        logs.LOGGER.addHandler(handler)
        logs.LOGGER.setLevel(logging.INFO)
        try:
            with connect(db_url) as s:
                result = engine.tick(s, T, trigger="scheduler", deps=deps)
        finally:
            logs.LOGGER.removeHandler(handler)
            logs.LOGGER.setLevel(level)
        assert result.status == name  # the runs are what their names say
        lines[name] = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = lines["failed"]
    lines["abandoned"] = [x for x in failed if x["message"] == "run abandoned"]
    lines["failed"] = [x for x in failed if x["message"] != "run abandoned"]
    assert len(lines["abandoned"]) == 1
    return lines


def test_gcp_alert_matches_problem_outcomes_of_every_function_and_notifies(gcp: Stack) -> None:
    policy = gcp.resource("google_monitoring_alert_policy", "run_problems")
    condition = first(first(policy["conditions"])["condition_matched_log"])
    assert condition["filter"] == "${local.alert_log_filter}"
    # A log-match condition requires a notification rate limit.
    assert first(first(policy["alert_strategy"])["notification_rate_limit"])["period"] == "300s"
    channels = policy["notification_channels"]
    assert (
        "var.alert_notification_channels" in channels
        and "google_monitoring_notification_channel.email" in channels
    )
    email = gcp.resource("google_monitoring_notification_channel", "email")
    assert email["type"] == "email" and email["labels"] == {"email_address": "${var.alert_email}"}
    assert gcp.variables["alert_notification_channels"]["default"] == []

    text = gcp.locals["alert_log_filter"]
    regex = re.search(r'service_name =~ "([^"]+)"', text)
    assert regex
    pattern = regex.group(1).replace("${var.name_prefix}", gcp.variables["name_prefix"]["default"])
    names = {f"{gcp.variables['name_prefix']['default']}-{k}" for k in gcp.locals["entry_points"]}
    assert {n for n in names if re.fullmatch(pattern, n)} == names
    assert not re.fullmatch(pattern, "other-service-tick")
    outcomes = re.search(r"jsonPayload\.outcome = \(([^)]*)\)", text)
    assert outcomes
    assert set(re.findall(r'"(\w+)"', outcomes.group(1))) == {"failed", "abandoned", "late"}
    assert "severity >= ERROR" in text


# Cloud Run functions (2nd gen) are Cloud Run services: their container logs are LogEntries of the
# monitored resource `cloud_run_revision` labelled with the service's name (Google's own query for
# a service's logs is `resource.type=cloud_run_revision AND resource.labels.service_name=SERVICE`,
# "Logging and viewing logs in Cloud Run", cloud.google.com /run/docs/logging). A JSON line on
# stdout/stderr becomes `jsonPayload`, its `severity` field the entry's severity ("Structured
# logging", cloud.google.com /logging/docs/structured-logging).
def _cloud_run_entry(line: dict[str, Any], service: str) -> dict[str, Any]:
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
        "severity": line["severity"],
        "jsonPayload": {k: v for k, v in line.items() if k != "severity"},
    }


def test_logging_query_evaluator_follows_the_documented_language() -> None:
    entry = {"resource": {"type": "gce_instance"}, "severity": "WARNING", "jsonPayload": {"a": "x1"}}
    assert logging_query_matches('resource.type = ("k8s_cluster" OR "gce_instance")', entry)
    assert not logging_query_matches('resource.type = "k8s_cluster"', entry)
    assert logging_query_matches("severity >= WARNING", entry)
    assert not logging_query_matches("severity >= ERROR", entry)
    assert logging_query_matches('jsonPayload.a =~ "^x[0-9]$"', entry)
    # OR binds tighter than AND: a AND (b OR c), and a line break is AND.
    assert not logging_query_matches(
        'resource.type = "k8s_cluster" AND severity >= ERROR OR jsonPayload.a = "x1"', entry
    )
    assert logging_query_matches('resource.type = "gce_instance"\n jsonPayload.a = "x1"', entry)
    assert not logging_query_matches('NOT jsonPayload.a = "x1"', entry)
    with pytest.raises(ValueError, match="not supported"):
        logging_query_matches('jsonPayload.a : "x"', entry)  # not in the subset: refused, not passed


def test_gcp_alert_fires_on_the_lines_of_a_real_failed_tick_only(
    gcp: Stack, engine_lines: dict[str, list[dict[str, Any]]]
) -> None:
    prefix = gcp.variables["name_prefix"]["default"]
    heredoc = re.fullmatch(r"<<-(\w+)\n(.*)\n\s*\1", gcp.locals["alert_log_filter"], re.S)
    assert heredoc, gcp.locals["alert_log_filter"]
    query = heredoc.group(2).replace("${var.name_prefix}", prefix)
    failed = [_cloud_run_entry(line, f"{prefix}-tick") for line in engine_lines["failed"]]
    matched = [e["jsonPayload"] for e in failed if logging_query_matches(query, e)]
    # The run's `tick` line (outcome failed) and the `strategy failed` line (severity ERROR).
    assert {m["message"] for m in matched} == {"tick", "strategy failed"}
    assert {m.get("outcome") for m in matched if m["message"] == "tick"} == {"failed"}
    # The outcome alone is enough: the same lines at WARNING still alert.
    demoted = [{**e, "severity": "WARNING"} for e in failed if e["jsonPayload"].get("outcome") == "failed"]
    assert demoted and all(logging_query_matches(query, e) for e in demoted)
    # The same lines from another service, and the lines of the good retry, do not alert.
    assert not any(
        logging_query_matches(query, _cloud_run_entry(x, "other-tick")) for x in engine_lines["failed"]
    )
    assert not any(
        logging_query_matches(query, _cloud_run_entry(x, f"{prefix}-tick")) for x in engine_lines["ok"]
    )
    # A run closed as abandoned (WARNING, outcome abandoned) alerts too.
    abandoned = [_cloud_run_entry(x, f"{prefix}-tick") for x in engine_lines["abandoned"]]
    assert [e["severity"] for e in abandoned] == ["WARNING"]
    assert all(logging_query_matches(query, e) for e in abandoned)


def test_gcp_outputs_name_the_job_for_the_cli(gcp: Stack) -> None:
    env = gcp.outputs["schedule_cli_env"]["value"]
    assert set(env) == {"SCHEDULER_PROJECT", "SCHEDULER_LOCATION", "SCHEDULER_JOB"}
    assert {"function_urls", "tick_url", "scheduler_job"} <= set(gcp.outputs)


# ---- AWS ------------------------------------------------------------------------------------


def test_aws_lambda_from_the_deploy_zip(aws: Stack) -> None:
    fn = aws.resource("aws_lambda_function", "engine")
    assert fn["handler"] == "functions.lambda_handler.handler"
    assert fn["runtime"] == "${var.lambda_runtime}"
    assert aws.variables["lambda_runtime"]["default"] in {"python3.11", "python3.12"}
    assert fn["source_code_hash"] == "${filebase64sha256(var.lambda_zip)}"
    assert aws.variables["lambda_zip"]["default"].endswith("build/aws/lambda.zip")
    assert "var.lambda_zip" in aws.resource("aws_s3_object", "lambda_zip")["source"]
    env = first(fn["environment"])["variables"]
    assert env == {
        "ENGINE_SECRET_ARN": "${aws_secretsmanager_secret.engine.arn}",
        # A rotation changes the configuration, so warm containers do not keep the old secret.
        "ENGINE_SECRET_VERSION": "${aws_secretsmanager_secret_version.engine.version_id}",
        "ENGINE_TRUST_PLATFORM_AUTH": "true",
        # Twice the timeout: a run still alive is never closed as abandoned.
        "ENGINE_RUN_TIMEOUT_SECONDS": "${tostring(2 * var.lambda_timeout_seconds)}",
        "TICK_DEADLINE_SECONDS": "${tostring(local.tick_deadline_seconds)}",
    }
    assert "engine_run_timeout_seconds" in Settings.model_fields  # the variable the function reads
    assert set(env) - {
        "ENGINE_TRUST_PLATFORM_AUTH",
        "ENGINE_RUN_TIMEOUT_SECONDS",
        "TICK_DEADLINE_SECONDS",
    } == {
        lambda_handler.SECRET_ARN_ENV,
        lambda_handler.SECRET_VERSION_ENV,
    }  # the names the handler reads


def test_aws_lambda_timeout_default_bounds_a_hung_tick(aws: Stack) -> None:
    """The one function serves ticks and Function URL backfills, so its timeout is one number. It
    must outlast the broker's retry budget (the handler does not set ALPACA_RETRY_BUDGET_SECONDS
    on AWS: the settings default applies), or a broker outage times out instead of answering its
    503; and it bounds how long a hung tick holds its strategies' claims (the next minutes answer
    `busy`) before Lambda kills it and counts the Error the tick_errors alarm reports. Five
    minutes at most; longer backfills run from the command line."""
    default = aws.variables["lambda_timeout_seconds"]["default"]
    budget = Settings.model_fields["alpaca_retry_budget_seconds"].default
    assert budget + 10 <= default <= 300, default
    assert aws.resource("aws_lambda_function", "engine")["timeout"] == "${var.lambda_timeout_seconds}"


def test_aws_secret_written_write_only(aws: Stack) -> None:
    version = aws.resource("aws_secretsmanager_secret_version", "engine")
    assert version["secret_id"] == "${aws_secretsmanager_secret.engine.id}"
    for name in SECRET_ENV:
        assert f"{name} = var." in version["secret_string_wo"]
    assert version["secret_string_wo_version"] == "${var.secrets_version}"


def test_aws_schedule_passes_its_scheduled_time_and_retries_inside_the_minute(aws: Stack) -> None:
    schedule = aws.resource("aws_scheduler_schedule", "tick")
    assert schedule["schedule_expression_timezone"] == "America/New_York"
    assert schedule["schedule_expression"] == "${var.tick_schedule}"
    assert aws.variables["tick_schedule"]["default"] == "cron(* 9-15 ? * MON-FRI *)"
    assert first(schedule["flexible_time_window"])["mode"] == "OFF"
    target = first(schedule["target"])
    assert target["arn"] == "${aws_lambda_function.engine.arn}"
    assert target["role_arn"] == "${aws_iam_role.scheduler.arn}"
    # A literal JSON string: jsonencode would escape < and > (see the terraform test below).
    assert target["input"] == "${local.tick_input}"
    assert json.loads(aws.locals["tick_input"]) == {
        "source": "scheduler",
        "minute": "<aws.scheduler.scheduled-time>",
    }
    retry = first(target["retry_policy"])
    assert retry["maximum_event_age_in_seconds"] == 60
    assert retry["maximum_retry_attempts"] >= 1
    invoke = aws.resource("aws_lambda_function_event_invoke_config", "engine")
    assert invoke["maximum_retry_attempts"] == 0  # no late replays one and two minutes later
    # An event Lambda could not start within a minute (throttling, a full queue) is dropped, not
    # run late on an old minute. 60 s is also Lambda's minimum for MaximumEventAgeInSeconds
    # (60-21600, "Error handling for asynchronous invocation").
    assert invoke["maximum_event_age_in_seconds"] <= 60
    alarm = aws.resource("aws_cloudwatch_metric_alarm", "tick_errors")  # failures are surfaced instead
    assert alarm["metric_name"] == "Errors"
    assert alarm["dimensions"]["FunctionName"] == "${aws_lambda_function.engine.function_name}"


def test_aws_alarms_notify_the_alerts_topic(aws: Stack) -> None:
    for name in ("tick_errors", "run_problems"):
        alarm = aws.resource("aws_cloudwatch_metric_alarm", name)
        assert alarm["alarm_actions"] == ["${aws_sns_topic.alerts.arn}"], name
        assert alarm["ok_actions"] == ["${aws_sns_topic.alerts.arn}"], name
    subscription = aws.resource("aws_sns_topic_subscription", "alert_email")
    assert subscription["count"] == '${var.alert_email == "" ? 0 : 1}'
    assert subscription["protocol"] == "email" and subscription["endpoint"] == "${var.alert_email}"
    assert aws.variables["alert_email"]["default"] == ""

    metric = aws.resource("aws_cloudwatch_log_metric_filter", "run_problems")
    assert metric["log_group_name"] == "${aws_cloudwatch_log_group.engine.name}"
    assert metric["pattern"] == "${local.run_problem_pattern}"
    problem = aws.resource("aws_cloudwatch_metric_alarm", "run_problems")
    assert (
        problem["metric_name"]
        == "${aws_cloudwatch_log_metric_filter.run_problems.metric_transformation[0].name}"
    )
    assert problem["namespace"] == "${local.metric_namespace}"
    # CloudWatch JSON filter: one `$.outcome = "x"` term per problem outcome, OR-ed.
    pattern = aws.locals["run_problem_pattern"]
    assert re.fullmatch(r'\{ \(\$\.outcome = "\w+"\)( \|\| \(\$\.outcome = "\w+"\))* \}', pattern), pattern
    assert set(re.findall(r'"(\w+)"', pattern)) == {"failed", "abandoned", "late"}


def test_cloudwatch_evaluator_follows_the_documented_syntax() -> None:
    event = {"eventType": "UpdateTrail", "user": {"id": 7}, "outcome": "failed"}
    assert cloudwatch_json_matches('{ $.eventType = "UpdateTrail" }', event)
    assert not cloudwatch_json_matches('{ $.eventType = "CreateTrail" }', event)
    assert cloudwatch_json_matches('{ ($.outcome = "ok") || ($.outcome = "fail*") }', event)
    assert not cloudwatch_json_matches('{ ($.outcome = "failed") && ($.eventType != "UpdateTrail") }', event)
    with pytest.raises(ValueError, match="not supported"):
        cloudwatch_json_matches("{ $.user.id > 5 }", event)  # not in the subset: refused, not passed


def _alarm_fires(alarm: dict[str, Any], datapoints: list[float]) -> bool:
    """CloudWatch's M out of N: the alarm goes to ALARM when at least datapoints_to_alarm (default:
    evaluation_periods) of the last evaluation_periods datapoints breach the threshold ("Using
    Amazon CloudWatch alarms", docs.aws.amazon.com /AmazonCloudWatch/latest/monitoring/
    AlarmThatSendsEmail.html)."""
    op, threshold = alarm["comparison_operator"], float(alarm["threshold"])
    breaching = {
        "GreaterThanThreshold": [v > threshold for v in datapoints],
        "GreaterThanOrEqualToThreshold": [v >= threshold for v in datapoints],
        "LessThanThreshold": [v < threshold for v in datapoints],
        "LessThanOrEqualToThreshold": [v <= threshold for v in datapoints],
    }[op]
    n = int(alarm["evaluation_periods"])
    m = int(alarm.get("datapoints_to_alarm", n))
    assert int(alarm["period"]) == 60  # one datapoint per minute, as the lists below are written
    return sum(breaching[-n:]) >= m


def test_aws_run_problems_alarm_fires_on_a_real_failed_tick_only(
    aws: Stack, engine_lines: dict[str, list[dict[str, Any]]]
) -> None:
    pattern = aws.locals["run_problem_pattern"]
    matched = [x for x in engine_lines["failed"] if cloudwatch_json_matches(pattern, x)]
    # The run's `tick` line and the `strategy failed` line: both carry outcome failed.
    assert {(m["message"], m.get("outcome")) for m in matched} >= {
        ("tick", "failed"),
        ("strategy failed", "failed"),
    }
    assert all(m.get("outcome") == "failed" for m in matched)
    assert not [x for x in engine_lines["ok"] if cloudwatch_json_matches(pattern, x)]
    # Each matching event adds the transformation's value to the minute's metric; the alarm sums it.
    transform = first(
        aws.resource("aws_cloudwatch_log_metric_filter", "run_problems")["metric_transformation"]
    )
    alarm = aws.resource("aws_cloudwatch_metric_alarm", "run_problems")
    assert alarm["statistic"] == "Sum"
    minute = float(transform["value"]) * len(matched)
    quiet = float(transform["default_value"])
    assert _alarm_fires(alarm, [quiet, quiet, minute])  # one failed minute is enough
    assert not _alarm_fires(alarm, [quiet, quiet, quiet])
    # A run closed as abandoned matches as well.
    assert [cloudwatch_json_matches(pattern, x) for x in engine_lines["abandoned"]] == [True]


def test_aws_tick_errors_alarm_fires_on_failed_minutes(aws: Stack) -> None:
    alarm = aws.resource("aws_cloudwatch_metric_alarm", "tick_errors")
    assert (alarm["namespace"], alarm["metric_name"], alarm["statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert alarm["treat_missing_data"] == "notBreaching"  # no invocations is not an outage
    # A scheduled tick that fails raises (ScheduledTickFailed): Lambda counts one Error for it.
    assert _alarm_fires(alarm, [0, 1, 1])  # two failed minutes out of three
    assert _alarm_fires(alarm, [1, 0, 1])
    assert not _alarm_fires(alarm, [0, 0, 0])
    assert int(alarm["evaluation_periods"]) <= 5  # within five minutes of the failures


def _statements(aws: Stack, name: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = aws.data["aws_iam_policy_document"][name]["statement"]
    return statements


def test_aws_scheduler_role_may_only_invoke_this_function(aws: Stack) -> None:
    assert aws.resource("aws_iam_role_policy", "scheduler")["role"] == "${aws_iam_role.scheduler.id}"
    (statement,) = _statements(aws, "scheduler")
    assert statement["actions"] == ["lambda:InvokeFunction"]
    assert statement["resources"] == ["${aws_lambda_function.engine.arn}"]
    (trust,) = _statements(aws, "scheduler_trust")
    assert first(trust["principals"])["identifiers"] == ["scheduler.amazonaws.com"]
    # AWS: scope aws:SourceArn to the schedule GROUP, never to a schedule; the group holds the tick.
    conditions = {c["variable"]: (c["test"], c["values"]) for c in trust["condition"]}
    assert conditions == {
        "aws:SourceAccount": ("StringEquals", ["${local.account_id}"]),
        "aws:SourceArn": ("ArnEquals", ["${aws_scheduler_schedule_group.engine.arn}"]),
    }
    schedule = aws.resource("aws_scheduler_schedule", "tick")
    assert schedule["group_name"] == "${aws_scheduler_schedule_group.engine.name}"
    assert "schedule_arn" not in aws.locals
    # Nothing else is attached to the role.
    attached = [
        body
        for rtype in ("aws_iam_role_policy", "aws_iam_role_policy_attachment")
        for body in aws.resources.get(rtype, {}).values()
        if body["role"].startswith("${aws_iam_role.scheduler.")
    ]
    assert len(attached) == 1


def test_aws_lambda_role_reads_its_secret_and_writes_its_logs_only(aws: Stack) -> None:
    statements = {s["sid"]: s for s in _statements(aws, "lambda")}
    assert set(statements) == {"ReadOwnSecret", "WriteOwnLogs"}
    assert statements["ReadOwnSecret"]["actions"] == ["secretsmanager:GetSecretValue"]
    assert statements["ReadOwnSecret"]["resources"] == ["${aws_secretsmanager_secret.engine.arn}"]
    assert set(statements["WriteOwnLogs"]["actions"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert statements["WriteOwnLogs"]["resources"] == ["${aws_cloudwatch_log_group.engine.arn}:*"]
    assert aws.resource("aws_lambda_function", "engine")["role"] == "${aws_iam_role.lambda.arn}"
    # No wildcard resource in any policy of the stack.
    for _, value in walk(aws.data["aws_iam_policy_document"]):
        assert value != "*"
    assert "aws_iam_role_policy_attachment" not in aws.resources  # no broad managed policy


def test_aws_function_url_requires_iam_and_logs_are_retained(aws: Stack) -> None:
    url = aws.resource("aws_lambda_function_url", "engine")
    assert url["authorization_type"] == "AWS_IAM"
    logs = aws.resource("aws_cloudwatch_log_group", "engine")
    assert logs["name"] == "/aws/lambda/${local.function_name}"
    assert logs["retention_in_days"] == "${var.log_retention_days}"
    assert aws.variables["log_retention_days"]["default"] > 0
    for permission in aws.resources.get("aws_lambda_permission", {}).values():
        assert permission["principal"] != "*"


def _tf_env(tmp_path: Path, *, mirror: bool) -> dict[str, str]:
    """Terraform with a CLI config of our own: the filesystem mirror only, never the network."""
    config = tmp_path / "terraformrc"
    block = (
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n'
        if mirror
        else ""
    )
    config.write_text(block)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(TF_CLI_CONFIG_FILE=str(config), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    return env


def _validate(stack: str, tmp_path: Path) -> dict[str, Any]:
    work = tmp_path / stack
    shutil.copytree(INFRA / stack, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    env = _tf_env(tmp_path, mirror=True)
    init = subprocess.run(
        [str(TERRAFORM), f"-chdir={work}", "init", "-backend=false", "-input=false", "-no-color"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    result = subprocess.run(
        [str(TERRAFORM), f"-chdir={work}", "validate", "-json", "-no-color"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _tf(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TERRAFORM), f"-chdir={work}", *args, "-no-color"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _aws_plan_test(tmp_path: Path, edit: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`terraform test` of a copy of infra/aws (its tests/*.tftest.hcl plan offline)."""
    work = tmp_path / "aws"
    shutil.copytree(INFRA / "aws", work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    if edit is not None:
        path = work / "scheduler.tf"
        text = path.read_text()
        assert edit[0] in text
        path.write_text(text.replace(edit[0], edit[1]))
    env = _tf_env(tmp_path, mirror=True)
    init = _tf(work, env, "init", "-backend=false", "-input=false")
    assert init.returncode == 0, init.stdout + init.stderr
    return _tf(work, env, "test")


needs_aws_mirror = pytest.mark.skipif(
    not (MIRROR / "registry.terraform.io/hashicorp/aws").is_dir(),
    reason=f"no hashicorp/aws provider in the local mirror {MIRROR} (terraform test runs offline only)",
)


@needs_terraform
@needs_aws_mirror
def test_aws_plan_renders_the_scheduled_time_keyword_and_the_group_trust(tmp_path: Path) -> None:
    result = _aws_plan_test(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r"Success! 3 passed, 0 failed", out), out


@needs_terraform
@needs_aws_mirror
def test_aws_plan_test_catches_a_jsonencoded_input(tmp_path: Path) -> None:
    """The check above can fail: built with jsonencode, the keyword arrives escaped."""
    result = _aws_plan_test(
        tmp_path,
        edit=(
            "input = local.tick_input",
            'input = jsonencode({ source = "scheduler", minute = "<aws.scheduler.scheduled-time>" })',
        ),
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "\\u003caws.scheduler.scheduled-time\\u003e" in out, out


@needs_terraform
@pytest.mark.skipif(
    not (MIRROR / "registry.terraform.io/hashicorp/aws").is_dir(),
    reason=f"no hashicorp/aws provider in the local mirror {MIRROR} (validate runs offline only)",
)
def test_aws_stack_validates_against_the_mirrored_provider(tmp_path: Path) -> None:
    report = _validate("aws", tmp_path)
    assert report["valid"] is True, report["diagnostics"]
    assert report["warning_count"] == 0, report["diagnostics"]


@needs_terraform
@pytest.mark.skipif(
    not all((MIRROR / f"registry.terraform.io/hashicorp/{p}").is_dir() for p in ("google", "time")),
    reason=f"no hashicorp/google and hashicorp/time providers in the local mirror {MIRROR}; the Google "
    "stack is checked by fmt and the HCL tests only",
)
def test_gcp_stack_validates_against_the_mirrored_provider(tmp_path: Path) -> None:
    report = _validate("gcp", tmp_path)
    assert report["valid"] is True, report["diagnostics"]


# ---- Supabase -------------------------------------------------------------------------------


def test_supabase_config_is_in_the_cli_layout() -> None:
    config = tomllib.loads((INFRA / "supabase" / "config.toml").read_text())
    assert config["project_id"]
    assert config["db"]["migrations"]["enabled"] is True
    assert config["db"]["seed"]["enabled"] is False
    migrations = sorted((INFRA / "supabase" / "migrations").glob("*.sql"))
    assert migrations, "the CLI applies infra/supabase/migrations; it is empty"
    for path in migrations:
        assert re.fullmatch(r"\d{14}_.+\.sql", path.name), path.name


CRON_SQL = INFRA / "supabase" / "cron.sql"

# The SQL interface of pg_cron, pg_net and Supabase Vault, as far as cron.sql uses it. The test
# server has none of these extensions; the stand-ins let the real file run and record what its
# job would send.
STANDINS = """
create schema cron;
create table cron.job (jobid bigserial primary key, jobname text unique, schedule text, command text,
                       active boolean not null default true);
create table cron.job_run_details (jobid bigint, end_time timestamptz);
create function cron.schedule(job_name text, schedule text, command text) returns bigint
language sql as $$
  insert into cron.job (jobname, schedule, command) values (job_name, schedule, command)
  on conflict (jobname) do update set schedule = excluded.schedule, command = excluded.command
  returning jobid $$;
create schema net;
create table net.calls (url text, headers jsonb, body jsonb, timeout_milliseconds int);
create function net.http_post(url text, body jsonb default '{}', params jsonb default '{}',
  headers jsonb default '{"Content-Type": "application/json"}', timeout_milliseconds int default 2000)
returns bigint language sql as $$
  insert into net.calls values (url, headers, body, timeout_milliseconds); select 1::bigint $$;
create schema vault;
create table vault.secrets (id bigserial, name text unique, secret text);
create view vault.decrypted_secrets as select id, name, secret as decrypted_secret from vault.secrets;
"""


def _cron_sql_without_extensions() -> str:
    text = CRON_SQL.read_text()
    assert re.search(r"^create extension if not exists pg_cron", text, re.M)
    assert re.search(r"^create extension if not exists pg_net", text, re.M)
    return re.sub(r"^create extension .*$", "", text, flags=re.M)


@pytest.fixture
def cron_db(empty_db_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(STANDINS)
        yield conn


def test_cron_sql_refuses_without_the_vault_secrets(cron_db: psycopg.Connection[tuple[Any, ...]]) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="engine_tick_url, engine_http_secret"):
        cron_db.execute(_cron_sql_without_extensions())
    assert cron_db.execute("select count(*) from cron.job").fetchone() == (0,)


def test_cron_sql_schedules_once_and_posts_with_the_vault_bearer(
    cron_db: psycopg.Connection[tuple[Any, ...]],
) -> None:
    url, bearer = "https://tick.example.test/tick", "vault-held-value-123"
    cron_db.execute(
        "insert into vault.secrets (name, secret) values ('engine_tick_url', %s), ('engine_http_secret', %s)",
        (url, bearer),
    )
    sql = _cron_sql_without_extensions()
    cron_db.execute(sql)
    cron_db.execute(sql)  # re-runnable: cron.schedule with an existing name replaces the job

    jobs = dict(cron_db.execute("select jobname, schedule from cron.job").fetchall())
    assert jobs == {"strategy-engine-tick": "* 13-20 * * 1-5", "strategy-engine-cron-cleanup": "17 3 * * *"}
    row = cron_db.execute("select command from cron.job where jobname = 'strategy-engine-tick'").fetchone()
    assert row is not None
    command = row[0]
    assert url not in command and bearer not in command  # read from Vault at each run

    cron_db.execute(command)  # what pg_cron runs every minute
    calls = cron_db.execute("select url, headers, body, timeout_milliseconds from net.calls").fetchall()
    assert len(calls) == 1
    sent_url, headers, body, timeout_ms = calls[0]
    assert sent_url == url
    assert headers == {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
    assert set(body) == {"minute"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", body["minute"])
    assert timeout_ms == 55000

    cleanup = cron_db.execute("select command from cron.job where jobname = 'strategy-engine-cron-cleanup'")
    cleanup_row = cleanup.fetchone()
    assert cleanup_row is not None
    cron_db.execute(cleanup_row[0])


def _evaluate(expression: str, names: dict[str, float]) -> float:
    """The value of a Terraform arithmetic expression (`min`, + - and the given names)."""
    body = expression.removeprefix("${").removesuffix("}")
    body = re.sub(r"^tostring\((.*)\)$", r"\1", body)
    for name in sorted(names, key=len, reverse=True):
        body = body.replace(name, repr(names[name]))
    assert re.fullmatch(r"[\d\s.,()+\-min]+", body), body  # nothing but arithmetic left
    return float(eval(body, {"__builtins__": {}, "min": min}))  # noqa: S307 - checked just above


SEND_MARGIN_SECONDS = 3  # the minute's commit and answer after the last POST attempt ends


def test_gcp_send_deadline_leaves_one_broker_budget_and_a_margin_inside_each_timeout(gcp: Stack) -> None:
    env = first(gcp.resource("google_cloudfunctions2_function", "engine")["service_config"])[
        "environment_variables"
    ]
    assert "tick_deadline_seconds" in Settings.model_fields  # TICK_DEADLINE_SECONDS is what it reads
    margin = gcp.locals["send_margin_seconds"]
    assert margin >= SEND_MARGIN_SECONDS
    deadlines = {}
    for name, entry in gcp.locals["entry_points"].items():
        values = {
            k: gcp.locals[v.removeprefix("${local.").removesuffix("}")]
            if str(v).startswith("${local.")
            else v
            for k, v in entry.items()
        }
        deadline = _evaluate(
            env["TICK_DEADLINE_SECONDS"],
            {
                "each.value.timeout_seconds": values["timeout_seconds"],
                "each.value.broker_budget_seconds": values["broker_budget_seconds"],
                "local.send_margin_seconds": margin,
            },
        )
        # the last POST may start at the deadline and retry for one budget; then the commit
        assert (
            deadline >= 1 and deadline + values["broker_budget_seconds"] + margin <= values["timeout_seconds"]
        )
        assert deadline <= Settings.model_fields["tick_deadline_seconds"].default
        deadlines[name] = deadline
    assert deadlines["tick"] == 20 - 12 - 3  # the scheduled tick: 5 s to start sending


def test_aws_send_deadline_leaves_the_broker_budget_and_a_margin_inside_the_lambda_timeout(
    aws: Stack,
) -> None:
    budget = Settings.model_fields["alpaca_retry_budget_seconds"].default  # the handler sets none on AWS
    expression = aws.locals["tick_deadline_seconds"]
    assert f"- {budget:g} -" in expression
    bounds = aws.variables["lambda_timeout_seconds"]
    for timeout in (30, bounds["default"], 900):  # the validation's bounds and the default
        deadline = _evaluate(expression, {"var.lambda_timeout_seconds": timeout})
        assert 1 <= deadline <= 45 and deadline + budget + SEND_MARGIN_SECONDS <= timeout
    assert "var.lambda_timeout_seconds >= 30" in bounds["validation"][0]["condition"]
