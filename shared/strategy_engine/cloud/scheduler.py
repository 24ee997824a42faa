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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from strategy_engine.brokers.paper_url import is_loopback_host

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.scheduler_v1 import CloudSchedulerClient, Job

DEFAULT_LOCATION = "us-east4"
DEFAULT_JOB = "strategy-engine-tick"


class ScheduleError(Exception):
    """A failure already phrased for the operator; `unavailable`: Cloud Scheduler could not be
    reached or failed (retry later, CLI exit 3), else the request itself is wrong (exit 2)."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


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


def make_target(project: str | None, location: str, job: str, endpoint: str | None, timeout: float) -> Target:
    """The job to act on; ScheduleError (a bad request) when a part is missing, blank or holds '/'
    (each part is one segment of the job's resource name)."""
    if not project:
        raise ScheduleError("no project: pass --project or set SCHEDULER_PROJECT")
    parts = {"--project": project.strip(), "--location": location.strip(), "--job": job.strip()}
    for option, value in parts.items():
        if not value or "/" in value:
            raise ScheduleError(f"invalid {option} {value!r}: a non-empty name without '/'")
    return Target(parts["--project"], parts["--location"], parts["--job"], endpoint or None, timeout)


def is_loopback(endpoint: str) -> bool:
    return is_loopback_host(urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname or "")


def make_client(t: Target) -> CloudSchedulerClient:
    """The real client on the REST transport (imported here: the rest of the CLI never pays
    for google-cloud-scheduler's import)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials, Credentials
    from google.cloud import scheduler_v1

    credentials: Credentials | None = None
    options = None
    if t.endpoint:
        options = ClientOptions(api_endpoint=t.endpoint)
        if is_loopback(t.endpoint):
            # google-auth leaves this constructor unannotated.
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return scheduler_v1.CloudSchedulerClient(
        credentials=credentials, transport="rest", client_options=options
    )


def retry_policy(t: Target) -> Retry:
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
def api_errors(t: Target) -> Iterator[None]:
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
        raise ScheduleError(
            f"Cloud Scheduler at {where} did not answer within {t.timeout:g} s", unavailable=True
        ) from None
    except exceptions.GoogleAPICallError as exc:
        raise ScheduleError(
            f"Cloud Scheduler refused ({exc.code}): {exc.message}", unavailable=int(exc.code or 500) >= 500
        ) from None
    except DefaultCredentialsError:
        raise ScheduleError("no Google credentials: run `gcloud auth application-default login`") from None
    except OSError as exc:  # requests' errors (refused, reset, timed out) are OSErrors
        raise ScheduleError(
            f"cannot reach Cloud Scheduler at {where}: {type(exc).__name__}", unavailable=True
        ) from None


def job_state(job: Job) -> str:
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
        "state": job_state(job),
        "schedule": job.schedule,
        "time_zone": job.time_zone,
        "uri": target.uri or None,
        "oidc_service_account": target.oidc_token.service_account_email or None,
        "last_attempt_time": _iso(job.last_attempt_time),
        "next_schedule_time": _iso(job.schedule_time),
        "last_status": {"code": status.code, "message": status.message} if job.last_attempt_time else None,
    }


def set_state(t: Target, *, paused: bool) -> tuple[str, bool]:
    """Pause or resume; (state after, whether this call changed it). Already in the wanted
    state is a success: the switch must be safe to pull twice."""
    from google.api_core import exceptions

    wanted = "PAUSED" if paused else "ENABLED"
    with api_errors(t):
        client = make_client(t)
        try:
            call = client.pause_job if paused else client.resume_job
            return job_state(call(name=t.name, retry=retry_policy(t), timeout=t.timeout)), True
        except (exceptions.FailedPrecondition, exceptions.BadRequest):
            current = job_state(client.get_job(name=t.name, retry=retry_policy(t), timeout=t.timeout))
            if current != wanted:
                raise
            return current, False


def trigger(t: Target, *, force: bool) -> str:
    """Fire the job once now; its state. A paused job is refused unless `force`: a paused job
    means someone pulled the switch. Raises ScheduleError."""
    with api_errors(t):
        client = make_client(t)
        state = job_state(client.get_job(name=t.name, retry=retry_policy(t), timeout=t.timeout))
        if state != "ENABLED" and not force:
            raise ScheduleError(f"{t.name} is {state}: resume it first, or pass --force")
        # Not retried: a lost answer must not fire a second run.
        client.run_job(name=t.name, retry=None, timeout=t.timeout)
    return state


def fetch(t: Target) -> dict[str, Any]:
    """The job's facts (see `describe`). Raises ScheduleError."""
    with api_errors(t):
        return describe(make_client(t).get_job(name=t.name, retry=retry_policy(t), timeout=t.timeout))
