"""Backfill: a range replayed through the tick's strategy and risk code, with a report
(docs/architecture.md, "Backfill").

`run_backfill` validates everything before it writes anything, reads the range in a constant
number of statements (the last `sma_window` bars before `start` per symbol, the bars of the
range, the flow of the range and its lookback), replays it (`replay`) on a fresh simulated
account whose day state starts empty and resets each New York trading date, then writes one
`backfill_runs` row and its journal (`run_mode = 'backfill'`) in one transaction: the order
candidates (orders, blocks, failures: every entry and exit signal), holds counted by reason in
the summary; every decision with `all_decisions`. It never touches `strategy_state`, positions
or balances, and never builds a real broker. The report is written after that commit: a failed
write or upload leaves the run recorded, with the error in the summary.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from strategy_engine.backtest import replay, report, report_html, rows, upload
from strategy_engine.backtest.market_arrays import check_budget, end_marks, load, session_grid
from strategy_engine.backtest.replay import Replay, ReplaySetup
from strategy_engine.core import calendar
from strategy_engine.core.errors import InputError, NotFound, Unavailable
from strategy_engine.core.models import Limits, RowId
from strategy_engine.core.strategies import StrategySpec, get_spec, parse_config
from strategy_engine.core.strategies.base import check_text
from strategy_engine.core.strategies.naive_flow_trend import NaiveFlowTrendConfig
from strategy_engine.logs import event
from strategy_engine.settings import Settings, get_settings
from strategy_engine.store import Session
from strategy_engine.store import backfill as store
from strategy_engine.store import strategies as strat_store

Progress = Callable[[str, float], None]


class BackfillRequest(BaseModel):
    """A backfill as asked for: the one validation of the CLI and the HTTP target.

    Times must carry an offset; they are truncated to the minute in UTC like the tick's T, and
    the replayed minutes are the session minutes T with start <= T < end.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str = Field(min_length=1, max_length=200)
    start: AwareDatetime
    end: AwareDatetime
    initial_cash: float = Field(default=100_000.0, gt=0, le=1e12)
    slippage_bps: float = Field(default=0.0, ge=0, le=1_000)
    config: dict[str, Any] | None = Field(default=None, description="overrides of the stored config")
    report: bool = True
    report_path: str | None = Field(default=None, pattern=r"\.html$", max_length=1000)
    upload_report: bool = True
    all_decisions: bool = False  # journal every decision; by default holds are counted by reason

    @field_validator("strategy", "report_path")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else check_text(v)

    @field_validator("start", "end")
    @classmethod
    def _minute(cls, v: datetime) -> datetime:
        try:
            return calendar.floor_minute(v)
        except OverflowError:  # pydantic reports ValueError as a field error, not OverflowError
            raise ValueError("time out of range") from None

    @model_validator(mode="after")
    def _range(self) -> BackfillRequest:
        if self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} must be after start {self.start.isoformat()}")
        limit = get_settings().backfill_max_days
        span = self.end - self.start
        if span > timedelta(days=limit):
            raise ValueError(
                f"range of {span.total_seconds() / 86_400:.1f} days exceeds the maximum of {limit}"
            )
        return self


def parse_request(doc: Mapping[str, Any]) -> BackfillRequest:
    """Validate a request; any problem becomes one readable line (InputError)."""
    try:
        return BackfillRequest.model_validate(doc)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        raise InputError("invalid backfill request: " + "; ".join(parts)) from None


@dataclass(frozen=True)
class Plan:
    strategy_id: RowId
    name: str
    spec: StrategySpec
    raw_config: dict[str, Any]  # the stored config with the request's overrides
    config: NaiveFlowTrendConfig
    limits: Limits

    def with_overrides(self, overrides: Mapping[str, Any]) -> NaiveFlowTrendConfig:
        return _config(self.spec.strategy_type, {**self.raw_config, **overrides})


def _config(strategy_type: str, raw: dict[str, Any]) -> NaiveFlowTrendConfig:
    cfg = parse_config(strategy_type, raw)
    if not isinstance(cfg, NaiveFlowTrendConfig):
        raise InputError(f"backfill does not support strategy_type {strategy_type!r}")
    return cfg


def plan(s: Session, req: BackfillRequest) -> Plan:
    """The definition, its config with the request's overrides (validated), and its limits."""
    rows = strat_store.load_all(s, req.strategy)
    if not rows:
        raise NotFound(f"unknown strategy {req.strategy!r}")
    d = rows[0].definition
    raw = {**d.config, **(req.config or {})}
    return Plan(d.id, d.name, get_spec(d.strategy_type), raw, _config(d.strategy_type, raw), rows[0].limits)


@dataclass
class BackfillResult:
    doc: dict[str, Any]
    replay: Replay


def parameters(p: Plan, req: BackfillRequest, as_active: bool) -> dict[str, Any]:
    return {
        "strategy": p.name,
        "strategy_type": p.spec.strategy_type,
        "start": req.start.isoformat(),
        "end": req.end.isoformat(),
        "initial_cash": req.initial_cash,
        "slippage_bps": req.slippage_bps,
        "config": p.config.model_dump(mode="json"),
        "config_overrides": req.config or {},
        "limits": {k: getattr(p.limits, k) for k in p.limits.__dataclass_fields__},
        "as_active": as_active,
        "journal": "all decisions" if req.all_decisions else "orders, blocks, failures, entry/exit signals",
    }


def execute(
    s: Session,
    req: BackfillRequest,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    as_active: bool = True,
) -> BackfillResult:
    """Validate, load, replay, record, report. `as_active=False` replays with the kill switch on."""
    note = progress or (lambda stage, fraction: None)
    clock = [time.perf_counter()]
    p = plan(s, req)
    grid = session_grid(req.start, req.end)
    budget = (settings or get_settings()).backfill_max_symbol_minutes
    check_budget(len(p.config.symbols), grid.shape[0], budget, warmup=p.config.sma_window)
    note("load", 0.0)
    data = load(s, p.config.symbols, req.start, req.end, p.config.sma_window, p.config.flow_lookback_minutes)
    clock.append(time.perf_counter())
    setup = ReplaySetup(
        p.strategy_id, p.spec, p.config, p.limits, req.initial_cash, req.slippage_bps, as_active
    )
    r = replay.run(data, grid, setup, lambda f: note("replay", f))
    summary = report.summarise(r, dict(zip(data.symbols, data.bar_ts, strict=True)), end_marks(data, req.end))
    clock.append(time.perf_counter())
    doc = _record(s, p, req, r, summary, as_active, lambda f: note("write", f))
    clock.append(time.perf_counter())
    if req.report:
        note("report", 0.0)
        doc.update(_publish(s, settings or get_settings(), req, r, summary, doc))
    clock.append(time.perf_counter())
    stages = zip(("load", "replay", "write", "report"), clock[:-1], clock[1:], strict=True)
    doc["timings_ms"] = {k: round((b - a) * 1000, 1) for k, a, b in stages}
    event(
        "backfill",
        run_id=doc["backfill_run_id"],
        strategy=p.name,
        minutes=summary["minutes"],
        orders=summary["orders"],
        decisions=summary["decisions"],
        timings_ms=doc["timings_ms"],
    )
    return BackfillResult(doc, r)


def _record(
    s: Session,
    p: Plan,
    req: BackfillRequest,
    r: Replay,
    summary: dict[str, Any],
    as_active: bool,
    on_progress: Callable[[float], None],
) -> dict[str, Any]:
    """One transaction: the backfill_runs row, then every decision by COPY; the summary document."""
    run_id, params = uuid.uuid4(), parameters(p, req, as_active)
    with s.transaction():
        store.insert_run(
            s, run_id, p.strategy_id, p.name, req.start, req.end, params, p.config.fingerprint(), summary
        )
        if req.all_decisions:
            store.write_decision_text(s, rows.lines(r, run_id, p.strategy_id, on_progress=on_progress))
        else:
            store.write_decision_text(s, rows.decided_lines(r, run_id, p.strategy_id))
    return {
        **summary,
        "backfill_run_id": str(run_id),
        "strategy": p.name,
        "start": req.start.isoformat(),
        "end": req.end.isoformat(),
        "config_hash": p.config.fingerprint(),
        "parameters": params,
    }


def run_backfill(
    s: Session,
    req: BackfillRequest,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    as_active: bool = True,
) -> dict[str, Any]:
    """The backfill entry point of the CLI and the HTTP target: returns the summary document."""
    return execute(s, req, settings=settings, progress=progress, as_active=as_active).doc


def _publish(
    s: Session,
    settings: Settings,
    req: BackfillRequest,
    r: Replay,
    summary: dict[str, Any],
    doc: dict[str, Any],
) -> dict[str, Any]:
    """Write the report, upload it where Supabase is configured, and record where it is.

    The run is already committed: a report that cannot be written or uploaded is noted in the
    summary (`report_error`, `report_upload_error`), never a failed backfill.
    """
    run_id = doc["backfill_run_id"]
    uploading = req.upload_report and upload.configured(settings)
    stem = f"backfill-{re.sub(r'[^A-Za-z0-9_.-]+', '_', doc['strategy'])}-{run_id}"
    folder = Path(tempfile.gettempdir()) / "strategy-engine-reports" if uploading else Path("reports")
    meta = {**doc["parameters"], "backfill_run_id": run_id, "config_hash": doc["config_hash"]}
    try:
        html, png = report_html.write_report(
            Path(req.report_path) if req.report_path else folder / f"{stem}.html", r, summary, meta
        )
    except (OSError, ImportError) as exc:  # ImportError: the deployed functions ship no matplotlib
        note = {"report_error": f"report not written: {exc}"}
        store.set_report(s, uuid.UUID(run_id), None, note)
        return {"report_path": None, **note}
    html, png = html.resolve(), png.resolve()  # recorded absolute: valid from any folder
    path, out = str(html), {"report_local_path": str(html), "report_png": str(png)}
    if uploading:
        try:
            path = upload.upload(settings, (html, png), f"backfills/{run_id}")[0]
        except Unavailable as exc:
            out["report_upload_error"] = str(exc)
            event("report upload failed", level=logging.WARNING, run_id=run_id, error=str(exc))
    store.set_report(s, uuid.UUID(run_id), path, {k: v for k, v in out.items() if k == "report_upload_error"})
    return {"report_path": path, **out}
