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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from strategy_engine import account_view, concurrency, execution, fanout
from strategy_engine.brokers.base import Broker
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core import calendar
from strategy_engine.core.data_quality import window_features
from strategy_engine.core.decide import MinuteInputs, decide, journal_orders, settle
from strategy_engine.core.errors import Busy, InputError, LiveTradingRefused, NotFound, Unavailable
from strategy_engine.core.models import (
    Account,
    BrokerAccount,
    Outcome,
    Position,
    RunResult,
    StrategyOutcome,
    StrategyRun,
)
from strategy_engine.core.risk import RiskContext
from strategy_engine.core.strategies import StrategySpec, get_spec, parse_config
from strategy_engine.core.strategies.base import StrategyConfig
from strategy_engine.invocation import (
    REAL_BROKERS,
    DeadlinePassed,
    Invocation,
    MinuteRefused,
    TickPolicy,
    run_status,
    wall_clock,
)
from strategy_engine.logs import event
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, journal, market
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import intents as intent_store
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.strategies import StrategyRow


def _default_alpaca(account: BrokerAccount) -> Broker:
    from strategy_engine.brokers.alpaca import AlpacaPaperBroker

    return AlpacaPaperBroker.from_settings(get_settings(), account.credentials_ref)


@dataclass
class Deps:
    """What the engine needs from outside, so tests and backfill can swap any of it."""

    alpaca_broker: Callable[[BrokerAccount], Broker] = _default_alpaca
    slippage_bps: float = 0.0
    simulated_broker: Callable[[Account, list[Position], datetime, float], Broker] = field(
        default=lambda acct, pos, minute, slip: SimulatedBroker(acct.cash, pos, slip, now=minute)
    )
    run_timeout_seconds: float = field(default_factory=lambda: get_settings().engine_run_timeout_seconds)
    policy: TickPolicy = field(default_factory=TickPolicy.from_settings)
    clock: Callable[[], datetime] = wall_clock
    sleep: Callable[[float], None] = time.sleep


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
    run_id = uuid.uuid4()
    for old in journal.close_abandoned(s, deps.run_timeout_seconds, run_id):
        event("run abandoned", level=logging.WARNING, run_id=str(old), closed_by=str(run_id),
              outcome="abandoned")  # fmt: skip
    journal.start_run(s, run_id, trigger, minute)
    runs: list[StrategyRun] = []
    status = "market_closed"
    if market_open:
        ids = [p.row.definition.id for p in planned if isinstance(p, _Planned)]
        strat_store.ensure_day_rows(s, ids, calendar.trading_date(minute))  # committed before any claim
        real = [p.account for p in planned if isinstance(p, _Planned) and p.account.broker in REAL_BROKERS]
        with contextlib.suppress(Exception):  # the broker's clock, once, before any thread asks it
            _ = real and inv.gate(real[0], deps.alpaca_broker)  # (a failure is each strategy's own)

        def one(conn: Session, sending: execution.Invocation, p: _Planned) -> StrategyRun:
            return _run_strategy(conn, deps, inv, sending, run_id, p)

        try:
            runs = fanout.run_all(s, planned, one, lambda p: (p.account.id, p.account.broker in REAL_BROKERS))
        except BaseException:
            _finish(s, RunResult(run_id, minute, trigger, "failed", ()), started)
            raise
        status = run_status(runs)
    return _finish(s, RunResult(run_id, minute, trigger, status, tuple(runs)), started)


def _finish(s: Session, result: RunResult, started: float) -> RunResult:
    result = replace(result, duration_ms=(time.perf_counter() - started) * 1000)
    counts, ms = result.counts(), result.duration_ms
    journal.finish_run(s, result.run_id, result.status, counts, result.as_json()["strategies"], ms)
    level = logging.ERROR if result.status == "failed" else logging.INFO
    event(
        "tick",
        level=level,
        run_id=str(result.run_id),
        minute=result.minute.isoformat(),
        trigger=result.trigger,
        outcome=result.status,
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
        locked = acct_store.lock_account_later(s, account.id)
        closes = market.recent_closes_later(s, symbols, minute, cfg.bars_needed)
        flow = market.flow_sums_later(s, symbols, minute - timedelta(minutes=cfg.flow_minutes), minute)
        pending = intent_store.pending_later(s, account.id, d.id) if real else lambda: []
    # A plain statement right after the pipeline re-arms the idle timeout (Session.pipeline).
    last_trades = journal.last_trades_later(s, d.id, symbols, minute)
    features = window_features(symbols, closes(), flow(), minute, cfg.bars_needed)
    view = open_account(s, deps, sending, account, minute, locked())
    reconciled, day = execution.reconcile(s, view, account.id, d.id, claimed.day, sending, minute, pending())
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
    )
    decided = decide(MinuteInputs(d.id, p.spec, cfg, claimed.limits, minute, features), ctx)
    if inv.past_deadline():  # the refresh above may have spent it: roll back, send nothing
        raise DeadlinePassed(f"past the invocation's {inv.policy.deadline_seconds:g}s deadline")
    answers = execution.post(view.broker, sending, d.id, account.id, minute, decided.intents)
    account_view.carry(sending.carried, account.id, answers)
    decisions, after = settle(decided, answers)
    logged = [*reconciled, *decisions]
    journal.write_decisions(
        s, [journal.decision_row(x, d.id, engine_run_id=run_id, backfill_run_id=None) for x in logged]
    )
    traded = any(x.outcome is Outcome.ORDERED for x in decisions)
    with s.pipeline():  # the minute's writes, one round trip
        journal.record_orders(s, d.id, account.id, "strategy", minute, journal_orders(decisions))
        strat_store.save_state(s, d.id, after.day, minute, minute if traded else None)
        if not view.broker.authoritative:
            acct_store.save_mirror(s, account.id, view.broker.account(), view.broker.positions())
    return execution.summarise(run_id, d.name, minute, logged)


def open_account(
    s: Session,
    deps: Deps,
    run: execution.Invocation,
    account: BrokerAccount,
    minute: datetime,
    locked: acct_store.Locked | None = None,
) -> account_view.AccountView:
    """`account_view.open_account`; the account's row is locked here unless the caller did (`locked`)."""

    def simulated(acct: Account, positions: list[Position]) -> Broker:
        return deps.simulated_broker(acct, positions, minute, deps.slippage_bps)

    locked = locked or acct_store.lock_account_later(s, account.id)()
    return account_view.open_account(s, account, locked, deps.alpaca_broker, simulated, run.carried, minute)[
        0
    ]


def now_minute() -> datetime:
    return calendar.floor_minute(datetime.now(UTC))
