"""The one orchestration of a minute: claim -> load -> decide -> risk -> execute -> record.

A strategy-minute is staged (claim, snapshot, reconcile, decide, send) then recorded (the
broker's answers, decisions, orders, day state) inside a transaction: its own for a simulated
account or a strategy alone on its account; for several strategies on one Alpaca account, one
transaction with a savepoint per strategy, every strategy staged before any answer is awaited
(`_run_account`). The `strategy_state` row, locked FOR UPDATE SKIP LOCKED, is the exactly-once
token: a worker that cannot take it answers `busy`, one that finds `last_run_minute >= T`
answers `already_processed`. Orders are sent while the lock is held, with client ids derived
from (strategy, symbol, T), so a crash before COMMIT is redone by the retry and the broker
de-duplicates the order. The simulated broker's account is written in the same transaction,
so its fills commit or vanish with the decisions. A real broker's intents are committed first
on a connection of their own and reconciled by the next run (`reconciliation.py`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from strategy_engine import account_view, concurrency, execution, fanout, reconciliation
from strategy_engine.account_view import AccountView
from strategy_engine.core import calendar
from strategy_engine.core.data_quality import window_features
from strategy_engine.core.decide import MinuteInputs, journal_orders
from strategy_engine.core.errors import Busy, LiveTradingRefused
from strategy_engine.core.models import (
    Decision,
    Outcome,
    RunResult,
    StrategyOutcome,
    StrategyRun,
)
from strategy_engine.core.risk import RiskContext
from strategy_engine.deps import Deps
from strategy_engine.invocation import (
    REAL_BROKERS,
    DeadlinePassed,
    Invocation,
    NotRun,
    run_status,
)
from strategy_engine.logs import event
from strategy_engine.planning import Planned, failed, finish, plan, refuse
from strategy_engine.store import Session, engine_runs, journal, market
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import intents as intent_store
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.session import Later

MAX_AHEAD = 16  # threads for the requests sent ahead (one per Alpaca account, one for the clock)
T = TypeVar("T")
__all__ = ["Deps", "now_minute", "plan", "tick"]  # Deps lives in deps.py; engine.Deps stays its public name


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
    `abandoned` first. Each strategy's failure is its own (`_run_account`). Before anything is
    read or sent, raises RuntimeError when `s` is inside a transaction or pipeline or not in
    autocommit (a strategy-minute commits its own: inside a caller's it could send orders it
    could not record), DatabaseUnavailable when its connection is lost.
    """
    s.check_outside_transactions("engine.tick runs its own transactions")
    base = deps or Deps()
    deps = replace(base, alpaca_broker=concurrency.one_per_account(base.alpaca_broker))  # per invocation
    started = time.perf_counter()
    minute = calendar.floor_minute(minute)
    inv = Invocation(minute, deps.policy, deps.clock, deps.sleep)
    refusal = inv.wait_for_minute()
    if refusal is not None:
        refuse(s, trigger, minute, refusal)
    market_open = calendar.is_open(minute)  # an out-of-range minute is refused before any write
    planned = plan(s, only)
    with ThreadPoolExecutor(max_workers=MAX_AHEAD, thread_name_prefix="broker-ahead") as pool:
        real = [p.account for p in planned if isinstance(p, Planned) and p.account.broker in REAL_BROKERS]
        ahead = account_view.Prefetch.start(s, real, deps.alpaca_broker, inv, pool) if market_open else None
        run_id = uuid.uuid4()
        with s.pipeline():  # one round trip, one implicit transaction: all stand or none
            engine_runs.relax_commit(s)  # bookkeeping: made durable by the first strategy's COMMIT
            abandoned = engine_runs.close_abandoned(s, deps.run_timeout_seconds, run_id)
            engine_runs.start_run(s, run_id, trigger, minute)
            if ahead is not None:  # the day rows, committed before any claim (`ensure_day_rows`)
                ids = [p.row.definition.id for p in planned if isinstance(p, Planned)]
                strat_store.ensure_day_rows(s, ids, calendar.trading_date(minute))
        for old in abandoned():  # outcome: the alerts' key
            event(
                "run abandoned", level=logging.WARNING, outcome="abandoned", run_id=str(old), by=str(run_id)
            )
        if ahead is None:
            return finish(s, RunResult(run_id, minute, trigger, "market_closed", ()), started)
        try:
            runs = _run_open(s, deps, inv, planned, run_id, ahead)
        except BaseException:
            finish(s, RunResult(run_id, minute, trigger, "failed", ()), started)
            raise
    return finish(s, RunResult(run_id, minute, trigger, run_status(runs), tuple(runs)), started)


def _run_open(
    s: Session,
    deps: Deps,
    inv: Invocation,
    planned: Sequence[Planned | StrategyRun],
    run_id: uuid.UUID,
    ahead: account_view.Prefetch,
) -> list[StrategyRun]:
    """Every planned strategy of an open minute, accounts at once (`fanout`), their day rows made."""

    def one(conn: Session, sending: execution.Invocation, ps: list[Planned]) -> list[StrategyRun]:
        return _run_account(conn, deps, inv, sending, run_id, ps)

    shared = partial(
        execution.Invocation.on, past_deadline=inv.past_deadline, send_by=inv.send_by, ahead=ahead
    )
    return fanout.run_all(s, planned, one, lambda p: (p.account.id, p.account.broker in REAL_BROKERS), shared)


def _run_account(
    s: Session,
    deps: Deps,
    inv: Invocation,
    sending: execution.Invocation,
    run_id: uuid.UUID,
    ps: list[Planned],
) -> list[StrategyRun]:
    """The strategies of one account, in order. Simulated, or one strategy: each in its own
    transaction. Several on a real broker: one transaction, each strategy in a savepoint of its
    own; every strategy is decided and its orders sent before any answer is waited for, then the
    answers are recorded, then one COMMIT. A strategy's failure rolls back its savepoint alone;
    a failed COMMIT fails every strategy that had got that far (their orders are reconciled by
    the next run, like any minute that died after sending)."""
    if len(ps) == 1 or ps[0].account.broker not in REAL_BROKERS:
        return [_ran(run_id, inv, p, partial(_own, s, deps, inv, sending, run_id, p)) for p in ps]
    runs: dict[int, StrategyRun] = {}
    staged: dict[int, _Staged] = {}
    try:
        with _transaction(s, deps):
            for k, p in enumerate(ps):
                locked = any(r.outcome is StrategyOutcome.BUSY and r.retryable for r in runs.values())
                stage = partial(_savepoint, s, deps, inv, sending, p)  # an account locked elsewhere:
                got = _locked(p) if locked else _ran(run_id, inv, p, stage)  # waited for once
                runs.update({k: got} if isinstance(got, StrategyRun) else {})
                staged.update({} if isinstance(got, StrategyRun) else {k: got})
            for k, st in staged.items():
                try:  # its orders are sent: whatever goes wrong now is a failure, never `busy`
                    runs[k] = _record(s, run_id, st, savepoint=True)
                except Exception as exc:
                    runs[k] = failed(run_id, ps[k].row.definition.name, inv.minute, exc)
    except LiveTradingRefused:
        raise
    except Exception as exc:  # BEGIN or COMMIT (or the connection) failed: nothing of it stands
        for k, p in enumerate(ps):
            if k in staged or k not in runs:
                runs[k] = failed(run_id, p.row.definition.name, inv.minute, exc)
    return [runs[k] for k in range(len(ps))]


def _locked(p: Planned) -> StrategyRun:
    return StrategyRun(p.row.definition.name, StrategyOutcome.BUSY, error="account locked", retryable=True)


@dataclass
class _Staged:
    """A strategy-minute decided and sent, its answers awaited: what `_record` writes."""

    p: Planned
    view: AccountView
    logged: list[Decision]  # the reconciled decisions; the minute's own follow
    settled: Later[tuple[list[Decision], RiskContext]]


def _transaction(s: Session, deps: Deps) -> AbstractContextManager[Session]:
    pol = deps.policy
    return s.transaction(lock_timeout=pol.lock_timeout_seconds, idle_timeout=pol.idle_timeout_seconds)


def _own(
    s: Session, deps: Deps, inv: Invocation, sending: execution.Invocation, run_id: uuid.UUID, p: Planned
) -> StrategyRun:
    """One strategy-minute in a transaction of its own: staged, then recorded."""
    with _transaction(s, deps):
        st = _stage(s, deps, inv, sending, p)
        return st if isinstance(st, StrategyRun) else _record(s, run_id, st, commit=True)


def _savepoint(
    s: Session, deps: Deps, inv: Invocation, sending: execution.Invocation, p: Planned
) -> StrategyRun | _Staged:
    """One strategy-minute staged in a savepoint of the caller's transaction."""
    with s.transaction():
        return _stage(s, deps, inv, sending, p)


def _ran(run_id: uuid.UUID, inv: Invocation, p: Planned, body: Callable[[], T]) -> T | StrategyRun:
    """`body()`, unless the invocation's rules stop the strategy first (`Invocation.gate`); any
    exception fails this strategy alone (a live account refuses the whole tick)."""
    name, minute, waited = p.row.definition.name, inv.minute, False
    try:
        stop = inv.gate(p.account)
        if stop is None:
            return body()
    except (Busy, NotRun) as exc:  # Busy: a lock waited for in vain, its claim released
        waited = isinstance(exc, Busy)
        stop = (StrategyOutcome.BUSY if isinstance(exc, Busy) else exc.outcome, str(exc))
    except LiveTradingRefused:
        raise
    except Exception as exc:
        return failed(run_id, name, minute, exc)
    outcome, why = stop
    event("strategy not run", run_id=str(run_id), strategy=name, minute=minute.isoformat(),
          outcome=outcome.value, reason=why)  # fmt: skip
    return StrategyRun(name, outcome, error=why, retryable=waited)


def _stage(
    s: Session, deps: Deps, inv: Invocation, sending: execution.Invocation, p: Planned
) -> StrategyRun | _Staged:
    """Claim, read, reconcile, decide and send: the strategy-minute up to the broker's answers."""
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
    inv.check_broker_open(account, deps.alpaca_broker)  # asked with the reads, as the tick began
    view = deps.open_account(s, sending, account, minute, locked())
    day0 = claimed.day
    reconciled, day = reconciliation.reconcile(s, view, account.id, day0, sending, pending())
    working = execution.working_exposure(s, view, features, minute, reconciled)
    ctx = execution.risk_context(
        minute, claimed, cfg.max_bar_age_seconds, features, view, day, working, last_trades()
    )
    if inv.past_deadline():  # the refresh above may have spent it: roll back, send nothing
        raise DeadlinePassed(f"past the invocation's {inv.policy.deadline_seconds:g}s deadline")
    inputs = MinuteInputs(d.id, p.spec, cfg, claimed.limits, minute, features)
    return _Staged(p, view, reconciled, execution.trade(view, sending, d.id, account.id, inputs, ctx))


def _record(
    s: Session, run_id: uuid.UUID, st: _Staged, *, savepoint: bool = False, commit: bool = False
) -> StrategyRun:
    """The broker's answers awaited (first, whatever happens next: no request outlives the tick),
    then the strategy-minute written: decisions, orders, day state (in a savepoint of its own if
    asked: a failure then rolls back this strategy's writes alone; or, `commit`, with the COMMIT
    of the strategy's own transaction in the writes' round trip)."""
    decisions, after = st.settled()
    with s.transaction() if savepoint else contextlib.nullcontext(s):
        d, account, minute, view = st.p.row.definition, st.p.account, after.minute, st.view
        rows = [journal.decision_row(x, d.id, engine_run_id=run_id) for x in [*st.logged, *decisions]]
        traded = any(x.outcome is Outcome.ORDERED for x in decisions)
        piped = journal.pipelined(rows)
        if not piped:
            journal.write_decisions(s, rows)  # COPY: a round trip of its own
        with s.pipeline():  # the minute's writes, one round trip
            if piped:
                journal.write_decisions(s, rows)
            journal.record_orders(s, d.id, account.id, "strategy", minute, journal_orders(decisions))
            strat_store.save_state(s, d.id, after.day, minute, minute if traded else None)
            if not view.broker.authoritative:
                acct_store.save_mirror(
                    s, account.id, view.broker.account(), view.broker.positions(), after.day.trading_date
                )
            if commit:
                s.commit_in_pipeline()
        return execution.summarise(run_id, d.name, minute, [*st.logged, *decisions])


def now_minute() -> datetime:
    return calendar.floor_minute(datetime.now(UTC))
