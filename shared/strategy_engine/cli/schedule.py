"""`strategy-engine schedule pause|resume|run-now|status`: the commands over the Cloud Scheduler
job that ticks the engine on Google Cloud (the control itself is `cloud.scheduler`)."""

from __future__ import annotations

from typing import Annotated

import typer

from strategy_engine.cli.options import emit
from strategy_engine.cloud import scheduler
from strategy_engine.cloud.scheduler import DEFAULT_JOB, DEFAULT_LOCATION

schedule_app = typer.Typer(
    help="Pause, resume, run or inspect the Cloud Scheduler job that ticks the engine"
    " (pausing it is the outermost kill switch).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


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


def _fail(exc: scheduler.ScheduleError) -> typer.Exit:
    """One line; exit 3 when Cloud Scheduler is unreachable or failing, else 2 (the request)."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(3 if exc.unavailable else 2)


def _toggle(
    paused: bool, project: str | None, location: str, job: str, endpoint: str | None, timeout: float
) -> None:
    try:
        t = scheduler.make_target(project, location, job, endpoint, timeout)
        state, changed = scheduler.set_state(t, paused=paused)
    except scheduler.ScheduleError as exc:
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
        t = scheduler.make_target(project, location, job, endpoint, timeout)
        state = scheduler.trigger(t, force=force)
    except scheduler.ScheduleError as exc:
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
        t = scheduler.make_target(project, location, job, endpoint, timeout)
        facts = scheduler.fetch(t)
    except scheduler.ScheduleError as exc:
        raise _fail(exc) from None
    if as_json:
        emit(facts, True, lambda: None)
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
