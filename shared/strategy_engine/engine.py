"""The one orchestration of a minute: claim -> load -> decide -> risk -> execute -> record.

Each strategy's minute is one transaction. Its `strategy_state` row, locked FOR UPDATE SKIP
LOCKED, is the exactly-once token: a worker that cannot take it answers `busy`, one that finds
`last_run_minute >= T` answers `already_processed`. Orders are sent while the lock is held,
with client ids derived from (strategy, symbol, T), so a crash before COMMIT is redone by the
retry and the broker de-duplicates the order. The simulated broker's account is written in the
same transaction, so its fills commit or vanish with the decisions. For a real broker each
order's intent is committed first on a connection of its own, and every run reconciles the
intents earlier minutes left behind (`execution.py`), so an order the broker accepted is
recorded by the end of the next run whatever failed in between.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from types import MappingProxyType

from strategy_engine import account_view, concurrency, execution, fanout, reconciliation
from strategy_engine.core import calendar
from strategy_engine.core.data_quality import window_features
from strategy_engine.core.decide import MinuteInputs, journal_orders
from strategy_engine.core.errors import Busy, InputError, LiveTradingRefused, NotFound, Unavailable
from strategy_engine.core.models import (
    BrokerAccount,
    Outcome,
    RunResult,
    StrategyOutcome,
    StrategyRun,
)
from strategy_engine.core.risk import RiskContext
from strategy_engine.core.strategies import StrategySpec, get_spec, parse_config
from strategy_engine.core.strategies.base import StrategyConfig
from strategy_engine.deps import Deps
from strategy_engine.invocation import (
    REAL_BROKERS,
    DeadlinePassed,
    Invocation,
    MinuteRefused,
    run_status,
)
from strategy_engine.logs import event
from strategy_engine.store import Session, journal, market
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import intents as intent_store
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.strategies import StrategyRow

MAX_AHEAD = 16  # threads for the requests sent ahead (one per Alpaca account, one for the clock)
__all__ = ["Deps", "now_minute", "plan", "tick"]  # Deps lives in deps.py; engine.Deps stays its public name


@dataclass(frozen=True, slots=True)
class _Planned:
    row: StrategyRow
    account: BrokerAccount
    spec: StrategySpec
    config: StrategyConfig


def plan(s: Session, only: str | None) -> list[_Planned | StrategyRun]:
    """Load and check every definition before anything is written. One that cannot run (bad config,
    no account) is that strategy's failed run; a live account refuses the tick (LiveTradingRefused)."""
    rows = strat_store.load_all(s, only)
    if only and not rows:
        raise NotFound(f"unknown strategy {only!r}")
    out: list[_Planned | StrategyRun] = []
    for row in rows:
        name, account = row.definition.name, row.account
        if account is not None and not row.account_is_paper:
            raise LiveTradingRefused(f"account {account.name!r} is not a paper account")
        try:
            if account is None:
                raise InputError("no account_id")
            spec = get_spec(row.definition.strategy_type)
            out.append(_Planned(row, account, spec, parse_config(spec.strategy_type, row.definition.config)))
        except Exception as exc:
            out.append(_failed(None, name, None, exc))
    return out


def tick(
    s: Session,
    minute: datetime,
    *,
    trigger: str = "manual",
    only: str | None = None,
    deps: Deps | None = None,
) -> RunResult:
    """Run every strategy (or `only`) for decision minute T; one engine_runs row per call.

    Runs left `running` by a dead process (older than `engine_run_timeout_seconds`) are closed as
    `abandoned` first. Each strategy's failure is its own (`_run_strategy`).
    """
    base = deps or Deps()
    deps = replace(base, alpaca_broker=concurrency.one_per_account(base.alpaca_broker))  # per invocation
    started = time.perf_counter()
    minute = calendar.floor_minute(minute)
    inv = Invocation(minute, deps.policy, deps.clock, deps.sleep)
    refusal = inv.wait_for_minute()
    if refusal is not None:
        _refuse(s, trigger, minute, refusal)
    market_open = calendar.is_open(minute)  # an out-of-range minute is refused before any write
    planned = plan(s, only)
    with ThreadPoolExecutor(max_workers=MAX_AHEAD, thread_name_prefix="broker-ahead") as pool:
        ahead = _ask_ahead(s, deps, inv, planned, pool) if market_open else None
        run_id = uuid.uuid4()
        for old in journal.close_abandoned(s, deps.run_timeout_seconds, run_id):  # outcome: the alerts' key
            event(
                "run abandoned", level=logging.WARNING, outcome="abandoned", run_id=str(old), by=str(run_id)
            )
        journal.start_run(s, run_id, trigger, minute)
        if ahead is None:
            return _finish(s, RunResult(run_id, minute, trigger, "market_closed", ()), started)
        try:
            runs = _run_open(s, deps, inv, planned, run_id, ahead)
        except BaseException:
            _finish(s, RunResult(run_id, minute, trigger, "failed", ()), started)
            raise
    return _finish(s, RunResult(run_id, minute, trigger, run_status(runs), tuple(runs)), started)


def _run_open(
    s: Session,
    deps: Deps,
    inv: Invocation,
    planned: Sequence[_Planned | StrategyRun],
    run_id: uuid.UUID,
    ahead: account_view.Prefetch,
) -> list[StrategyRun]:
    """Every planned strategy of an open minute, accounts at once (`fanout`)."""
    ids = [p.row.definition.id for p in planned if isinstance(p, _Planned)]
    strat_store.ensure_day_rows(s, ids, calendar.trading_date(inv.minute))  # committed before any claim
    real = [p.account for p in planned if isinstance(p, _Planned) and p.account.broker in REAL_BROKERS]
    with contextlib.suppress(Exception):  # the broker's clock, once, before any thread asks it
        _ = real and inv.gate(real[0], deps.alpaca_broker)  # (a failure is each strategy's own)

    def one(conn: Session, sending: execution.Invocation, p: _Planned) -> StrategyRun:
        return _run_strategy(conn, deps, inv, sending, run_id, p)

    shared = partial(
        execution.Invocation.on, past_deadline=inv.past_deadline, send_by=inv.send_by, ahead=ahead
    )
    return fanout.run_all(s, planned, one, lambda p: (p.account.id, p.account.broker in REAL_BROKERS), shared)


def _ask_ahead(
    s: Session,
    deps: Deps,
    inv: Invocation,
    planned: Sequence[_Planned | StrategyRun],
    pool: ThreadPoolExecutor,
) -> account_view.Prefetch:
    """Send, before anything else, the broker requests the minute will need: the clock of the
    real broker and each real account's reads (none when the minute is too late to send)."""
    real = [p.account for p in planned if isinstance(p, _Planned) and p.account.broker in REAL_BROKERS]
    if not real or inv.late_by() is not None:
        return account_view.Prefetch()
    inv.ask_clock(real[0], deps.alpaca_broker, pool)
    return account_view.Prefetch.start(s, real, deps.alpaca_broker, inv.minute, pool)


def _finish(s: Session, result: RunResult, started: float) -> RunResult:
    result = replace(result, duration_ms=(time.perf_counter() - started) * 1000)
    counts, ms = result.counts(), result.duration_ms
    on_time = journal.finish_run(s, result.run_id, result.status, counts, result.as_json()["strategies"], ms)
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


def _refuse(s: Session, trigger: str, minute: datetime, reason: str) -> None:
    """A minute the engine will not run leaves an engine_runs row, then is refused (InputError)."""
    run_id = uuid.uuid4()
    journal.start_run(s, run_id, trigger, minute)
    journal.finish_run(s, run_id, "refused", {}, {"reason": reason}, 0.0)
    event("tick", level=logging.WARNING, run_id=str(run_id), minute=minute.isoformat(),
          outcome="refused", error=reason)  # fmt: skip
    raise MinuteRefused(reason)


def _run_strategy(
    s: Session, deps: Deps, inv: Invocation, sending: execution.Invocation, run_id: uuid.UUID, p: _Planned
) -> StrategyRun:
    """The strategy's minute in its own transaction, unless the invocation's rules stop it first;
    any exception fails this strategy alone."""
    name, minute = p.row.definition.name, inv.minute
    try:
        stop = inv.gate(p.account, deps.alpaca_broker)
        if stop is None:
            pol = deps.policy
            with s.transaction(lock_timeout=pol.lock_timeout_seconds, idle_timeout=pol.idle_timeout_seconds):
                return _strategy_minute(s, deps, inv, sending, run_id, p)
    except (Busy, DeadlinePassed) as exc:
        stop = (StrategyOutcome.BUSY if isinstance(exc, Busy) else StrategyOutcome.DEADLINE, str(exc))
    except LiveTradingRefused:
        raise
    except Exception as exc:
        return _failed(run_id, name, minute, exc)
    outcome, why = stop
    event("strategy not run", run_id=str(run_id), strategy=name, minute=minute.isoformat(),
          outcome=outcome.value, reason=why)  # fmt: skip
    return StrategyRun(name, outcome, error=why)


def _failed(run_id: uuid.UUID | None, name: str, minute: datetime | None, exc: Exception) -> StrategyRun:
    at, kind = (minute.isoformat() if minute else None), type(exc).__name__
    fields = {"run_id": str(run_id), "strategy": name, "minute": at, "error_class": kind, "error": str(exc)}
    event("strategy failed", level=logging.ERROR, outcome="failed", **fields)
    return StrategyRun(
        name, StrategyOutcome.FAILED, error=f"{kind}: {exc}", retryable=isinstance(exc, Unavailable)
    )


def _strategy_minute(
    s: Session, deps: Deps, inv: Invocation, sending: execution.Invocation, run_id: uuid.UUID, p: _Planned
) -> StrategyRun:
    d, cfg, account, minute = p.row.definition, p.config, p.account, inv.minute
    # The claim also reads the kill switch and limits as they are now: a change made while an
    # earlier strategy of this invocation ran takes effect.
    if (claimed := strat_store.claim(s, d.id, calendar.trading_date(minute))) is None:
        return StrategyRun(d.name, StrategyOutcome.BUSY)
    if claimed.last_run is not None and claimed.last_run >= minute:
        return StrategyRun(d.name, StrategyOutcome.ALREADY_PROCESSED)
    symbols = list(cfg.symbols)
    real = account.broker in REAL_BROKERS
    with s.pipeline():  # the minute's snapshot, one round trip: the account's lock comes first
        locked = acct_store.lock_account_later(s, account.id, calendar.trading_date(minute))
        closes = market.recent_closes_later(s, symbols, minute, cfg.bars_needed)
        flow = market.flow_sums_later(s, symbols, minute - timedelta(minutes=cfg.flow_minutes), minute)
        pending = intent_store.pending_later(s, account.id, d.id) if real else lambda: []
    # A plain statement right after the pipeline re-arms the idle timeout (Session.pipeline).
    last_trades = journal.last_trades_later(s, d.id, symbols, minute)
    features = window_features(symbols, closes(), flow(), minute, cfg.bars_needed)
    view = deps.open_account(s, sending, account, minute, locked())
    reconciled, day = reconciliation.reconcile(
        s, view, account.id, d.id, claimed.day, sending, minute, pending()
    )
    working = execution.working_exposure(s, view, features, minute, reconciled)
    ctx = RiskContext(
        minute=minute,
        is_active=claimed.is_active,
        market_open=True,
        last_bar_ts=MappingProxyType({k: f.last_bar_ts for k, f in features.items() if f.last_bar_ts}),
        max_bar_age_seconds=cfg.max_bar_age_seconds,
        day=day,
        positions=MappingProxyType({pos.symbol: pos.qty for pos in view.positions}),
        last_trade_at=MappingProxyType(last_trades()),
        buying_power=view.account.buying_power - working.reserved,
        working=working,
        sells_release_power=not view.broker.authoritative,
    )
    if inv.past_deadline():  # the refresh above may have spent it: roll back, send nothing
        raise DeadlinePassed(f"past the invocation's {inv.policy.deadline_seconds:g}s deadline")
    inputs = MinuteInputs(d.id, p.spec, cfg, claimed.limits, minute, features)
    decisions, after = execution.trade(view, sending, d.id, account.id, inputs, ctx)
    logged = [*reconciled, *decisions]
    journal.write_decisions(
        s, [journal.decision_row(x, d.id, engine_run_id=run_id, backfill_run_id=None) for x in logged]
    )
    traded = any(x.outcome is Outcome.ORDERED for x in decisions)
    with s.pipeline():  # the minute's writes, one round trip
        journal.record_orders(s, d.id, account.id, "strategy", minute, journal_orders(decisions))
        strat_store.save_state(s, d.id, after.day, minute, minute if traded else None)
        if not view.broker.authoritative:
            acct_store.save_mirror(
                s, account.id, view.broker.account(), view.broker.positions(), day.trading_date
            )
    return execution.summarise(run_id, d.name, minute, logged)


def now_minute() -> datetime:
    return calendar.floor_minute(datetime.now(UTC))
