"""`strategy-engine schedule`: the real google-cloud-scheduler client against our loopback server.

What is proven: the four commands send the v1 REST calls Cloud Scheduler expects and parse its
answers (the client asks for numeric enums; the fake honours that); the kill switch is
idempotent; run-now will not fire a paused job by accident; every failure (unknown job, server
down, a transient 503, no project, no credentials) is one readable line, exit status 2 for a
wrong request and 3 when Cloud Scheduler cannot be reached or fails (the CLI's convention).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from strategy_engine.cli.schedule import schedule_app
from strategy_engine.cloud.scheduler import is_loopback
from tests.fake_cloud_scheduler import FakeCloudScheduler

PROJECT = "demo-project"
JOB = f"projects/{PROJECT}/locations/us-east4/jobs/strategy-engine-tick"
ENV_NAMES = (
    "SCHEDULER_PROJECT",
    "SCHEDULER_LOCATION",
    "SCHEDULER_JOB",
    "SCHEDULER_ENDPOINT",
    "GOOGLE_CLOUD_PROJECT",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeCloudScheduler]:
    with FakeCloudScheduler() as server:
        server.add_job(PROJECT)
        yield server


def cli(fake: FakeCloudScheduler, *args: str) -> Result:
    command, *rest = args
    return CliRunner().invoke(
        schedule_app, [command, "--project", PROJECT, "--endpoint", fake.endpoint, *rest]
    )


def one_error_line(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_status_shows_state_schedule_and_target(fake: FakeCloudScheduler) -> None:
    result = cli(fake, "status")
    assert result.exit_code == 0, result.output
    assert f"job       {JOB}" in result.stdout
    assert "state     ENABLED" in result.stdout
    assert "* 9-15 * * 1-5 (America/New_York)" in result.stdout
    assert "last run  never" in result.stdout
    # The real client asked for numeric enums and parsed the number back into ENABLED.
    assert "enum-encoding=int" in fake.requests[0].query.replace("%3D", "=")
    assert (fake.requests[0].method, fake.requests[0].path) == ("GET", f"/v1/{JOB}")


def test_status_json_is_one_document(fake: FakeCloudScheduler) -> None:
    result = cli(fake, "status", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["name"] == JOB
    assert doc["state"] == "ENABLED"
    assert doc["time_zone"] == "America/New_York"
    assert doc["oidc_service_account"].startswith("strategy-engine-sched@")
    assert doc["last_attempt_time"] is None


def test_pause_then_pause_again_is_still_a_success(fake: FakeCloudScheduler) -> None:
    first = cli(fake, "pause")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("paused: ")
    assert fake.jobs[JOB]["state"] == "PAUSED"
    assert (fake.requests[-1].method, fake.requests[-1].path) == ("POST", f"/v1/{JOB}:pause")

    # The server answers FAILED_PRECONDITION; the switch is already in the wanted position.
    again = cli(fake, "pause")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("already paused: ")
    assert fake.jobs[JOB]["state"] == "PAUSED"


def test_resume_after_pause_and_resume_of_an_enabled_job(fake: FakeCloudScheduler) -> None:
    fake.jobs[JOB]["state"] = "PAUSED"
    result = cli(fake, "resume")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("resumed: ")
    assert fake.jobs[JOB]["state"] == "ENABLED"

    again = cli(fake, "resume")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("already enabled: ")


def test_resume_of_a_disabled_job_is_refused_readably(fake: FakeCloudScheduler) -> None:
    fake.jobs[JOB]["state"] = "DISABLED"
    line = one_error_line(cli(fake, "resume"))
    assert "Cloud Scheduler refused (400)" in line
    assert fake.jobs[JOB]["state"] == "DISABLED"


def test_run_now_fires_an_enabled_job_once(fake: FakeCloudScheduler) -> None:
    result = cli(fake, "run-now")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("triggered: ")
    assert fake.runs == [JOB]
    assert fake.jobs[JOB]["lastAttemptTime"]


def test_run_now_refuses_a_paused_job_unless_forced(fake: FakeCloudScheduler) -> None:
    fake.jobs[JOB]["state"] = "PAUSED"
    line = one_error_line(cli(fake, "run-now"))
    assert "is PAUSED: resume it first, or pass --force" in line
    assert fake.runs == []

    forced = cli(fake, "run-now", "--force")
    assert forced.exit_code == 0, forced.output
    assert fake.runs == [JOB]


@pytest.mark.parametrize("command", ["status", "pause", "resume", "run-now"])
def test_unknown_job_is_one_readable_line(fake: FakeCloudScheduler, command: str) -> None:
    line = one_error_line(cli(fake, command, "--job", "nope"))
    assert f"projects/{PROJECT}/locations/us-east4/jobs/nope not found" in line


@pytest.mark.parametrize("command", ["status", "pause", "resume", "run-now"])
def test_server_down_is_one_readable_line(command: str) -> None:
    with FakeCloudScheduler() as server:
        endpoint = server.endpoint
    result = CliRunner().invoke(schedule_app, [command, "--project", PROJECT, "--endpoint", endpoint])
    line = one_error_line(result, 3)
    assert f"cannot reach Cloud Scheduler at {endpoint}" in line


def test_transient_unavailability_is_retried(fake: FakeCloudScheduler) -> None:
    fake.fail_next = [503, 503]
    result = cli(fake, "pause")
    assert result.exit_code == 0, result.output
    assert fake.jobs[JOB]["state"] == "PAUSED"
    assert [r.path for r in fake.requests] == [f"/v1/{JOB}:pause"] * 3


def test_run_now_is_not_retried(fake: FakeCloudScheduler) -> None:
    """A lost answer to :run must not fire the tick twice: one attempt, then a readable line."""
    fake.fail_on["run"] = [503]
    line = one_error_line(cli(fake, "run-now"), 3)
    assert "Cloud Scheduler refused (503)" in line
    assert [r.path for r in fake.requests].count(f"/v1/{JOB}:run") == 1


def test_settings_come_from_the_environment(fake: FakeCloudScheduler) -> None:
    fake.add_job("other-project", "europe-west1", "my-tick")
    env = {
        "SCHEDULER_PROJECT": "other-project",
        "SCHEDULER_LOCATION": "europe-west1",
        "SCHEDULER_JOB": "my-tick",
        "SCHEDULER_ENDPOINT": fake.endpoint,
    }
    result = CliRunner().invoke(schedule_app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "projects/other-project/locations/europe-west1/jobs/my-tick"


def test_no_project_is_one_readable_line() -> None:
    line = one_error_line(CliRunner().invoke(schedule_app, ["pause"]))
    assert "no project" in line


def test_loopback_calls_carry_no_credentials(fake: FakeCloudScheduler) -> None:
    assert cli(fake, "status").exit_code == 0
    assert all("Authorization" not in r.headers for r in fake.requests)


def test_missing_credentials_for_a_real_endpoint_is_one_readable_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An explicit, missing credentials file: google-auth fails at once, before any network.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", f"{tmp_path}/missing.json")
    result = CliRunner().invoke(
        schedule_app, ["status", "--project", PROJECT, "--endpoint", "https://scheduler.example.invalid"]
    )
    line = one_error_line(result)
    assert "no Google credentials" in line


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost:1", True),
        ("[::1]:443", True),
        ("127.0.0.1:9", True),
        ("https://cloudscheduler.googleapis.com", False),
        ("https://10.0.0.1", False),
    ],
)
def test_only_loopback_endpoints_are_anonymous(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--project", "p", "--location", ""], "--location"),
        (["--project", "a/b"], "--project"),
        (["--project", " "], "--project"),
        (["--project", "p", "--job", "x/y"], "--job"),
    ],
)
def test_blank_or_slashed_names_are_one_line_exit_2(args: list[str], option: str) -> None:
    result = CliRunner().invoke(schedule_app, ["status", *args, "--endpoint", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert f"invalid {option}" in one_error_line(result)
