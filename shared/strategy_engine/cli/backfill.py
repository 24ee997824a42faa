"""`strategy-engine backfill`: a range through the tick's core, with a progress bar and a report.

`register(app)` adds the command to the main Typer app. The request is validated by
`BackfillRequest` (the model the HTTP target uses) before any database is opened, so a bad
range is one line on stderr, exit 2, and nothing written. `--sweep key=v1,v2` (repeatable) runs
the grid instead, on data loaded once, and prints it ranked by total P&L. A report that cannot
be written is printed and the exit status is 1 (the run itself is recorded).

`backfill runs` lists recorded runs; `backfill prune --older-than 30d` deletes old runs with
their journal rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from strategy_engine.backtest.backfill import Progress as ProgressFn
from strategy_engine.backtest.backfill import parse_request, run_backfill
from strategy_engine.backtest.sweep import parse_axes, run_sweep
from strategy_engine.cli.options import DbUrl, DemoFlag, JsonFlag, emit, fail, session_for
from strategy_engine.core.errors import InputError

SWEEP_COLUMNS = ("total_pnl", "max_drawdown", "orders", "round_trips", "win_rate", "profit_factor", "sharpe")
SUMMARY_ROWS = (
    "total_pnl",
    "realized_pnl",
    "unrealized_pnl",
    "max_drawdown",
    "orders",
    "round_trips",
    "win_rate",
    "profit_factor",
    "sharpe",
    "exposure",
    "decisions",
    "minutes",
)


backfill_app = typer.Typer(
    help="Replay a range through the tick's strategy and risk code (or list and prune runs).",
    invoke_without_command=True,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    app.add_typer(backfill_app, name="backfill")


@backfill_app.callback()
def backfill(
    ctx: typer.Context,
    strategy: Annotated[
        str | None, typer.Option(help="Strategy name (its stored config and limits are used).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="First decision minute, ISO 8601 with offset, e.g. 2025-07-01T13:30Z.")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="End of the range (exclusive), ISO 8601 with offset.")
    ] = None,
    report: Annotated[
        str | None, typer.Option("--report", help="Write the HTML report here (.html; PNG beside it).")
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the HTML/PNG report.")] = False,
    initial_cash: Annotated[float, typer.Option(help="Cash of the simulated account.")] = 100_000.0,
    slippage_bps: Annotated[float, typer.Option(help="Fill at the last close +/- this many bps.")] = 0.0,
    sweep: Annotated[
        list[str] | None, typer.Option("--sweep", help="key=v1,v2 (repeatable): run the grid.")
    ] = None,
    all_decisions: Annotated[
        bool, typer.Option("--all-decisions", help="Journal every decision (default: holds only counted).")
    ] = False,
    database_url: DbUrl = None,
    demo: DemoFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Replay a range through the strategy and risk code of the tick; print the summary."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [f"--{k}" for k, v in (("strategy", strategy), ("start", start), ("end", end)) if v is None]
    if missing:
        fail(f"backfill: missing option {', '.join(missing)} (see --help)", 2)
    if report is not None and no_report:
        fail("backfill: --report and --no-report contradict each other: give one", 2)
    doc: dict[str, Any] = {
        "strategy": strategy,
        "start": start,
        "end": end,
        "initial_cash": initial_cash,
        "slippage_bps": slippage_bps,
        "report": not no_report and not sweep,
        "report_path": report,
        "all_decisions": all_decisions,
    }
    try:
        req = parse_request(doc)
        axes = parse_axes(sweep) if sweep else None
    except InputError as exc:
        fail(str(exc), 2)
    with _progress(as_json) as progress, session_for(database_url, demo=demo) as s:
        if axes is not None:
            result = run_sweep(s, req, axes, progress=progress)
        else:
            result = run_backfill(s, req, progress=progress)
    if axes is not None:
        if not no_report:
            result.update(_sweep_report(result, list(axes), report))
        emit(result, as_json, lambda: _print_sweep(result, list(axes)))
    else:
        emit(result, as_json, lambda: _print_summary(result))
    if result.get("report_error"):
        fail(str(result["report_error"]), 1)


def _sweep_report(result: dict[str, Any], keys: list[str], path: str | None) -> dict[str, Any]:
    from pathlib import Path

    from strategy_engine.backtest.sweep_report import write_sweep_report

    target = Path(path or f"reports/sweep-{result['sweep_id']}.html")
    try:
        return {"report_path": str(write_sweep_report(target, result, keys).resolve())}
    except OSError as exc:
        return {"report_path": None, "report_error": f"report not written: {exc}"}


@backfill_app.command("runs")
def runs(
    strategy: Annotated[str | None, typer.Option(help="Only this strategy's runs.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1 to 10000).")] = 50,
    database_url: DbUrl = None,
    demo: DemoFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Recorded backfill runs, newest first, with their P&L and journal size."""
    from strategy_engine.cli.views import print_rows
    from strategy_engine.store.backfill import list_runs

    if not 1 <= limit <= 10_000:
        fail(f"--limit must be between 1 and 10000, got {limit}", 2)
    with session_for(database_url, demo=demo) as s:
        rows = list_runs(s, strategy, limit)
    # 80 columns hold the short id and the range's start; wider terminals show more
    shown = [{"run": str(r["id"])[:8], **r} for r in rows]
    columns = (
        "run",
        "range_start",
        "strategy",
        "total_pnl",
        "orders",
        "journal_rows",
        "created_at",
        "status",
        "id",
    )
    emit(rows, as_json, lambda: print_rows(f"backfill runs ({len(rows)}, newest first)", shown, columns))


@backfill_app.command("prune")
def prune(
    older_than: Annotated[
        str, typer.Option(help="Age (e.g. 30d) or ISO date/time: runs created before it go.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted; delete nothing.")
    ] = False,
    database_url: DbUrl = None,
    demo: DemoFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete backfill runs created before a cutoff, with their journal rows."""
    from strategy_engine.store.backfill import prune_runs

    try:
        cutoff = _cutoff(older_than)
    except InputError as exc:
        fail(str(exc), 2)
    with session_for(database_url, demo=demo) as s:
        n_runs, n_rows = prune_runs(s, cutoff, dry_run=dry_run)
    doc = {"before": cutoff.isoformat(), "runs": n_runs, "decisions": n_rows, "dry_run": dry_run}
    verb = "would delete" if dry_run else "deleted"
    emit(
        doc,
        as_json,
        lambda: print(
            f"{verb} {n_runs} run(s) and {n_rows} decision(s) created before {cutoff:%Y-%m-%d %H:%M} UTC"
        ),
    )


def _cutoff(text: str, now: datetime | None = None) -> datetime:
    """`Nd` (N days before now) or an ISO 8601 date/time (a date: midnight New York);
    InputError for anything else or a cutoff in the future (it would delete every run)."""
    now = now or datetime.now(UTC)
    raw = text.strip().lower()
    if raw.endswith("d") and raw[:-1].isdigit():
        return now - timedelta(days=int(raw[:-1]))
    from strategy_engine.cli.options import parse_since

    try:
        cutoff = parse_since(text)
    except InputError as exc:
        raise InputError(f"--older-than: {exc}; or an age like 30d") from None
    if cutoff is None:  # parse_since returns None only for None
        raise InputError("--older-than is required, e.g. 30d")
    if cutoff > now:
        raise InputError(f"--older-than {text.strip()} is in the future: it would delete every run")
    return cutoff.astimezone(UTC)


@contextmanager
def _progress(disabled: bool) -> Iterator[ProgressFn]:
    """One bar per stage (load, replay, write, report or sweep) on stderr, shown from the first stage on."""
    bar = Progress(
        TextColumn("[bold]{task.description:<7}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=disabled,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, fraction: float) -> None:
        if not tasks:
            bar.start()
        if stage not in tasks:
            for task in tasks.values():
                bar.update(task, completed=100)
            tasks[stage] = bar.add_task(stage, total=100)
        bar.update(tasks[stage], completed=round(fraction * 100, 1))

    try:
        yield update
        for task in tasks.values():
            bar.update(task, completed=100)
    finally:
        if tasks:
            bar.stop()


def _print_summary(doc: dict[str, Any]) -> None:
    console = Console()
    console.print(f"backfill {doc['strategy']} {doc['start']} -> {doc['end']}", style="table.title")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in SUMMARY_ROWS:
        table.add_row(key, str(doc[key]))
    for code, n in doc["blocked"].items():
        table.add_row(f"blocked: {code}", str(n))
    for reason, n in doc.get("holds_by_reason", {}).items():
        table.add_row(f"held: {reason}", str(n))
    console.print(table)
    console.print(f"backfill_run_id {doc['backfill_run_id']}  config_hash {doc['config_hash']}")
    _print_notes(console, doc)
    if doc.get("report_upload_error"):
        console.print(f"[yellow]report upload failed, kept locally: {doc['report_upload_error']}")


def _print_notes(console: Console, doc: dict[str, Any]) -> None:
    """The Sharpe note, the warnings and where the report is: after a backfill or a sweep."""
    if doc.get("sharpe_note"):
        console.print(f"sharpe: {doc['sharpe_note']}")
    for line in doc.get("warnings", []):
        console.print(f"[yellow]warning: {line}", soft_wrap=True)
    if doc.get("report_path"):
        console.print(f"report: {doc['report_path']}", soft_wrap=True)


def _print_sweep(doc: dict[str, Any], keys: list[str]) -> None:
    """The grid ranked, in the columns that fit the terminal (rank, the axes, P&L first)."""
    from strategy_engine.cli.views import console, fit_table

    out = console()
    title = f"sweep {doc['strategy']} {doc['start']} -> {doc['end']}, best total P&L first"
    out.print(fit_table(title, doc["results"], ("rank", *keys, *SWEEP_COLUMNS), out.width))
    _print_notes(out, doc)
