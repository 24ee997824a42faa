"""`strategy-engine schedule pause|resume|run-now|status`: the Cloud Scheduler job that ticks
the engine on Google Cloud.

Pausing the job is the outermost kill switch: no tick reaches the engine, whatever the
database or the functions say (the strategies' `is_active` flag is the finer, per-strategy one).
So pause and resume are idempotent (pausing a paused job is a success, not an error), and
run-now refuses to fire a paused job unless told to, because a paused job means someone pulled
the switch.

The job is named by options or the environment (`SCHEDULER_PROJECT`, `SCHEDULER_LOCATION`,
`SCHEDULER_JOB`; Terraform prints them as `schedule_cli_env`). The client always speaks REST:
one transport for production and for the tests, which point `--endpoint` at a loopback server
(anonymous credentials there, Application Default Credentials everywhere else). Every API or
network failure becomes one readable line on stderr and exit status 1.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.scheduler_v1 import CloudSchedulerClient, Job

schedule_app = typer.Typer(
    help="Pause, resume, run or inspect the Cloud Scheduler job that ticks the engine"
    " (pausing it is the outermost kill switch).",
    no_args_is_help=True,
)

DEFAULT_LOCATION = "us-east4"
DEFAULT_JOB = "strategy-engine-tick"

Project = Annotated[
    str | None,
    typer.Option(
        "--project",
        envvar=["SCHEDULER_PROJECT", "GOOGLE_CLOUD_PROJECT"],
        help="Google Cloud project of the job.",
        show_default=False,
    ),
]
Location = Annotated[str, typer.Option("--location", envvar="SCHEDULER_LOCATION", help="Region of the job.")]
JobId = Annotated[str, typer.Option("--job", envvar="SCHEDULER_JOB", help="Job id.")]
Endpoint = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        envvar="SCHEDULER_ENDPOINT",
        help="Cloud Scheduler API endpoint (default: Google's); a loopback URL uses anonymous credentials.",
        show_default=False,
    ),
]
Timeout = Annotated[
    float, typer.Option("--timeout", min=1.0, help="Seconds to keep trying a call that fails transiently.")
]


class ScheduleError(Exception):
    """A failure already phrased for the operator."""


@dataclass(frozen=True, slots=True)
class Target:
    project: str
    location: str
    job: str
    endpoint: str | None
    timeout: float

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/jobs/{self.job}"


def _target(project: str | None, location: str, job: str, endpoint: str | None, timeout: float) -> Target:
    if not project:
        raise ScheduleError("no project: pass --project or set SCHEDULER_PROJECT")
    return Target(project, location, job, endpoint or None, timeout)


def _is_loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client(t: Target) -> CloudSchedulerClient:
    """The real client on the REST transport (imported here: the rest of the CLI never pays
    for google-cloud-scheduler's import)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials, Credentials
    from google.cloud import scheduler_v1

    credentials: Credentials | None = None
    options = None
    if t.endpoint:
        options = ClientOptions(api_endpoint=t.endpoint)
        if _is_loopback(t.endpoint):
            # google-auth leaves this constructor unannotated.
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return scheduler_v1.CloudSchedulerClient(
        credentials=credentials, transport="rest", client_options=options
    )


def _retry(t: Target) -> Retry:
    """Bounded retries of transient failures: the client's default keeps trying for 10 minutes,
    far too long for someone reaching for a kill switch."""
    from google.api_core import exceptions, retry

    return retry.Retry(
        initial=0.2,
        maximum=2.0,
        multiplier=2.0,
        timeout=t.timeout,
        predicate=retry.if_exception_type(exceptions.ServiceUnavailable, exceptions.DeadlineExceeded),
    )


@contextmanager
def _api_errors(t: Target) -> Iterator[None]:
    """Translate the client's failures, once, into one sentence each."""
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError

    where = t.endpoint or "cloudscheduler.googleapis.com"
    try:
        yield
    except exceptions.NotFound:
        raise ScheduleError(
            f"scheduler job {t.name} not found (check --project, --location, --job)"
        ) from None
    except exceptions.PermissionDenied as exc:
        raise ScheduleError(f"permission denied on {t.name}: {exc.message}") from None
    except exceptions.RetryError:
        raise ScheduleError(f"Cloud Scheduler at {where} did not answer within {t.timeout:g} s") from None
    except exceptions.GoogleAPICallError as exc:
        raise ScheduleError(f"Cloud Scheduler refused ({exc.code}): {exc.message}") from None
    except DefaultCredentialsError:
        raise ScheduleError("no Google credentials: run `gcloud auth application-default login`") from None
    except OSError as exc:  # requests' errors (refused, reset, timed out) are OSErrors
        raise ScheduleError(f"cannot reach Cloud Scheduler at {where}: {type(exc).__name__}") from None


def _state(job: Job) -> str:
    from google.cloud import scheduler_v1

    return str(scheduler_v1.Job.State(job.state).name)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def describe(job: Job) -> dict[str, Any]:
    """The facts an operator needs, as plain JSON values."""
    target = job.http_target
    status = job.status
    return {
        "name": job.name,
        "state": _state(job),
        "schedule": job.schedule,
        "time_zone": job.time_zone,
        "uri": target.uri or None,
        "oidc_service_account": target.oidc_token.service_account_email or None,
        "last_attempt_time": _iso(job.last_attempt_time),
        "next_schedule_time": _iso(job.schedule_time),
        "last_status": {"code": status.code, "message": status.message} if job.last_attempt_time else None,
    }


def _set_state(t: Target, *, paused: bool) -> tuple[str, bool]:
    """Pause or resume; (state after, whether this call changed it). Already in the wanted
    state is a success: the switch must be safe to pull twice."""
    from google.api_core import exceptions

    wanted = "PAUSED" if paused else "ENABLED"
    with _api_errors(t):
        client = _client(t)
        try:
            call = client.pause_job if paused else client.resume_job
            return _state(call(name=t.name, retry=_retry(t), timeout=t.timeout)), True
        except (exceptions.FailedPrecondition, exceptions.BadRequest):
            current = _state(client.get_job(name=t.name, retry=_retry(t), timeout=t.timeout))
            if current != wanted:
                raise
            return current, False


def _fail(exc: ScheduleError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def _toggle(
    paused: bool, project: str | None, location: str, job: str, endpoint: str | None, timeout: float
) -> None:
    try:
        t = _target(project, location, job, endpoint, timeout)
        state, changed = _set_state(t, paused=paused)
    except ScheduleError as exc:
        raise _fail(exc) from None
    done, already = ("paused", "already paused") if paused else ("resumed", "already enabled")
    typer.echo(f"{done if changed else already}: {t.name} (state {state})")


@schedule_app.command()
def pause(
    project: Project = None,
    location: Location = DEFAULT_LOCATION,
    job: JobId = DEFAULT_JOB,
    endpoint: Endpoint = None,
    timeout: Timeout = 30.0,
) -> None:
    """Pause the tick schedule: the engine receives no more ticks (the kill switch)."""
    _toggle(True, project, location, job, endpoint, timeout)


@schedule_app.command()
def resume(
    project: Project = None,
    location: Location = DEFAULT_LOCATION,
    job: JobId = DEFAULT_JOB,
    endpoint: Endpoint = None,
    timeout: Timeout = 30.0,
) -> None:
    """Resume the tick schedule after a pause."""
    _toggle(False, project, location, job, endpoint, timeout)


@schedule_app.command("run-now")
def run_now(
    project: Project = None,
    location: Location = DEFAULT_LOCATION,
    job: JobId = DEFAULT_JOB,
    endpoint: Endpoint = None,
    timeout: Timeout = 30.0,
    force: Annotated[bool, typer.Option("--force", help="Run even though the job is paused.")] = False,
) -> None:
    """Fire the tick once now; the engine's per-minute claim makes a repeated minute harmless."""
    try:
        t = _target(project, location, job, endpoint, timeout)
        with _api_errors(t):
            client = _client(t)
            state = _state(client.get_job(name=t.name, retry=_retry(t), timeout=t.timeout))
            if state != "ENABLED" and not force:
                raise ScheduleError(f"{t.name} is {state}: resume it first, or pass --force")
            # Not retried: a lost answer must not fire a second run.
            client.run_job(name=t.name, retry=None, timeout=t.timeout)
    except ScheduleError as exc:
        raise _fail(exc) from None
    typer.echo(f"triggered: {t.name} (state {state})")


@schedule_app.command()
def status(
    project: Project = None,
    location: Location = DEFAULT_LOCATION,
    job: JobId = DEFAULT_JOB,
    endpoint: Endpoint = None,
    timeout: Timeout = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Show the job's state, schedule, target and last attempt."""
    try:
        t = _target(project, location, job, endpoint, timeout)
        with _api_errors(t):
            facts = describe(_client(t).get_job(name=t.name, retry=_retry(t), timeout=t.timeout))
    except ScheduleError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(facts))
        return
    last = facts["last_status"]
    outcome = "" if not last or not last["code"] else f" (code {last['code']}: {last['message']})"
    rows = [
        ("job", facts["name"]),
        ("state", facts["state"]),
        ("schedule", f"{facts['schedule']} ({facts['time_zone']})"),
        ("target", f"{facts['uri']} as {facts['oidc_service_account']}"),
        ("last run", f"{facts['last_attempt_time'] or 'never'}{outcome}"),
        ("next run", facts["next_schedule_time"] or "-"),
    ]
    for key, value in rows:
        typer.echo(f"{key:<9} {value}")
