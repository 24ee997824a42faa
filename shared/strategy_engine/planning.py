"""What a tick will run, and what it leaves in `engine_runs` (`engine.tick` calls these).

`plan`: every definition loaded and checked before anything is written. A definition that
cannot run (bad config, no account) is that strategy's failed run; a live account refuses the
whole tick. `failed` is how any strategy's failure is logged and counted; `finish` closes the
run's row and logs the `tick` event; `refuse` leaves the row of a minute the engine will not run.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from strategy_engine.core.errors import EngineError, InputError, LiveTradingRefused, NotFound, Unavailable
from strategy_engine.core.models import BrokerAccount, RunResult, StrategyOutcome, StrategyRun
from strategy_engine.core.strategies import StrategySpec, get_spec, parse_config
from strategy_engine.core.strategies.base import StrategyConfig
from strategy_engine.invocation import MinuteRefused
from strategy_engine.logs import event
from strategy_engine.store import Session, engine_runs
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.strategies import StrategyRow


@dataclass(frozen=True, slots=True)
class Planned:
    """A definition that can run: its row, account, strategy and parsed config."""

    row: StrategyRow
    account: BrokerAccount
    spec: StrategySpec
    config: StrategyConfig


def plan(s: Session, only: str | None) -> list[Planned | StrategyRun]:
    """Load and check every definition before anything is written. One that cannot run (bad config,
    no account) is that strategy's failed run; a live account refuses the tick (LiveTradingRefused)."""
    rows = strat_store.load_all(s, only)
    if only and not rows:
        raise NotFound(f"unknown strategy {only!r}")
    out: list[Planned | StrategyRun] = []
    for row in rows:
        name, account = row.definition.name, row.account
        if account is not None and not row.account_is_paper:
            raise LiveTradingRefused(f"account {account.name!r} is not a paper account")
        try:
            if account is None:
                raise InputError("no account_id")
            spec = get_spec(row.definition.strategy_type)
            out.append(Planned(row, account, spec, parse_config(spec.strategy_type, row.definition.config)))
        except Exception as exc:
            out.append(failed(None, name, None, exc))
    return out


def failed(run_id: uuid.UUID | None, name: str, minute: datetime | None, exc: Exception) -> StrategyRun:
    """Log `strategy failed` (the alerts' key: outcome) and return the failed run; retryable when
    the cause is an outage."""
    at, kind = (minute.isoformat() if minute else None), type(exc).__name__
    fields = {"run_id": str(run_id), "strategy": name, "minute": at, "error_class": kind, "error": str(exc)}
    if isinstance(exc, EngineError) and exc.detail:  # the driver's words, scrubbed: for operators
        fields["detail"] = exc.detail
    event("strategy failed", level=logging.ERROR, outcome="failed", **fields)
    return StrategyRun(
        name, StrategyOutcome.FAILED, error=f"{kind}: {exc}", retryable=isinstance(exc, Unavailable)
    )


def finish(s: Session, result: RunResult, started: float) -> RunResult:
    result = replace(result, duration_ms=(time.perf_counter() - started) * 1000)
    counts, ms = result.counts(), result.duration_ms
    detail = result.as_json()["strategies"]
    on_time = engine_runs.finish_run(s, result.run_id, result.status, counts, detail, ms)
    level = logging.ERROR if result.status == "failed" or not on_time else logging.INFO
    event(
        "tick",
        level=level,
        run_id=str(result.run_id),
        minute=result.minute.isoformat(),
        trigger=result.trigger,
        outcome=result.status if on_time else "abandoned",
        duration_ms=round(ms, 3),
        **counts,
    )
    return result


def refuse(s: Session, trigger: str, minute: datetime, reason: str) -> None:
    """A minute the engine will not run leaves an engine_runs row, then is refused (InputError)."""
    run_id = uuid.uuid4()
    engine_runs.start_run(s, run_id, trigger, minute)
    engine_runs.finish_run(s, run_id, "refused", {}, {"reason": reason}, 0.0)
    event("tick", level=logging.WARNING, run_id=str(run_id), minute=minute.isoformat(),
          outcome="refused", error=reason)  # fmt: skip
    raise MinuteRefused(reason)
