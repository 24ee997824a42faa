"""The one orchestration of a minute: claim -> load -> decide -> risk -> execute -> record.

Each strategy's minute is one transaction. Its `strategy_state` row, locked FOR UPDATE SKIP
LOCKED, is the exactly-once token: a worker that cannot take it answers `busy`, one that finds
`last_run_minute >= T` answers `already_processed`. Orders are sent while the lock is held,
with client ids derived from (strategy, symbol, T), so a crash before COMMIT is redone by the
retry and the broker de-duplicates the order. The simulated broker's account is written in the
same transaction, so its fills commit or vanish with the decisions.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from strategy_engine.brokers.base import Broker
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core import calendar
from strategy_engine.core.data_quality import held_through_break, window_features
from strategy_engine.core.decide import (
    MinuteInputs,
    client_order_id,
    decide_minute,
    journal_orders,
    processed_run,
)
from strategy_engine.core.errors import InputError, LiveTradingRefused, NotFound, Unavailable
from strategy_engine.core.models import (
    Account,
    BrokerAccount,
    Decision,
    Features,
    Outcome,
    Position,
    RowId,
    RunResult,
    Side,
    StrategyOutcome,
    StrategyRun,
)
from strategy_engine.core.risk import RiskContext
from strategy_engine.core.strategies import StrategySpec, get_spec, parse_config
from strategy_engine.core.strategies.base import StrategyConfig
from strategy_engine.logs import event
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, journal, market
from strategy_engine.store import accounts as acct_store
from strategy_engine.store import strategies as strat_store
from strategy_engine.store.strategies import StrategyRow


def _default_alpaca() -> Broker:
    from strategy_engine.brokers.alpaca import AlpacaPaperBroker

    return AlpacaPaperBroker.from_settings(get_settings())


@dataclass
class Deps:
    """What the engine needs from outside, so tests and backfill can swap any of it."""

    alpaca_broker: Callable[[], Broker] = _default_alpaca
    slippage_bps: float = 0.0
    simulated_broker: Callable[[Account, list[Position], datetime, float], Broker] = field(
        default=lambda acct, pos, minute, slip: SimulatedBroker(acct.cash, pos, slip, now=minute)
    )
    run_timeout_seconds: float = field(default_factory=lambda: get_settings().engine_run_timeout_seconds)


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
    deps = deps or Deps()
    started = time.perf_counter()
    minute = calendar.floor_minute(minute)
    market_open = calendar.is_open(minute)  # an out-of-range minute is refused before any write
    planned = plan(s, only)
    run_id = uuid.uuid4()
    for old in journal.close_abandoned(s, deps.run_timeout_seconds, run_id):  # outcome: the alerts' key
        event("run abandoned", level=logging.WARNING, outcome="abandoned", run_id=str(old), by=str(run_id))
    journal.start_run(s, run_id, trigger, minute)
    runs: list[StrategyRun] = []
    status = "market_closed"
    try:
        for p in planned if market_open else []:
            runs.append(p if isinstance(p, StrategyRun) else _run_strategy(s, deps, run_id, minute, p))
    except LiveTradingRefused:
        _finish(s, RunResult(run_id, minute, trigger, "failed", tuple(runs)), started)
        raise
    if market_open:
        status = "failed" if any(r.outcome is StrategyOutcome.FAILED for r in runs) else "ok"
    return _finish(s, RunResult(run_id, minute, trigger, status, tuple(runs)), started)


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


def _run_strategy(s: Session, deps: Deps, run_id: uuid.UUID, minute: datetime, p: _Planned) -> StrategyRun:
    """One strategy's minute in its own transaction; any exception fails this strategy alone."""
    try:
        with s.transaction():
            return _strategy_minute(s, deps, run_id, minute, p)
    except LiveTradingRefused:
        raise
    except Exception as exc:
        return _failed(run_id, p.row.definition.name, minute, exc)


def _failed(run_id: uuid.UUID | None, name: str, minute: datetime | None, exc: Exception) -> StrategyRun:
    at, kind = (minute.isoformat() if minute else None), type(exc).__name__
    fields = {"run_id": str(run_id), "strategy": name, "minute": at, "error_class": kind, "error": str(exc)}
    event("strategy failed", level=logging.ERROR, **fields)
    return StrategyRun(
        name, StrategyOutcome.FAILED, error=f"{kind}: {exc}", retryable=isinstance(exc, Unavailable)
    )


def _strategy_minute(s: Session, deps: Deps, run_id: uuid.UUID, minute: datetime, p: _Planned) -> StrategyRun:
    d, cfg, account = p.row.definition, p.config, p.account
    claimed = strat_store.claim(s, d.id, calendar.trading_date(minute))
    if claimed is None:
        return StrategyRun(d.name, StrategyOutcome.BUSY)
    day, last_run = claimed
    if last_run is not None and last_run >= minute:
        return StrategyRun(d.name, StrategyOutcome.ALREADY_PROCESSED)
    broker, acct, positions = open_account(s, deps, account, minute)
    symbols = list(cfg.symbols)
    if broker.authoritative and journal.attempted_before(s, minute, run_id):
        acct, positions = _before_own_orders(broker, d.id, symbols, minute, acct, positions)
    features = _features(s, symbols, minute, cfg)
    ctx = RiskContext(
        minute=minute,
        is_active=d.is_active,
        market_open=True,
        last_bar_ts=MappingProxyType({k: f.last_bar_ts for k, f in features.items() if f.last_bar_ts}),
        max_bar_age_seconds=cfg.max_bar_age_seconds,
        day=day,
        positions=MappingProxyType({pos.symbol: pos.qty for pos in positions}),
        last_trade_at=MappingProxyType(journal.last_trades(s, d.id, symbols, minute)),
        buying_power=acct.buying_power,
    )
    inputs = MinuteInputs(d.id, p.spec, cfg, p.row.limits, minute, features)
    decisions, after = decide_minute(inputs, ctx, broker.submit)
    rows = [journal.decision_row(x, d.id, engine_run_id=run_id, backfill_run_id=None) for x in decisions]
    journal.write_decisions(s, rows)
    journal.record_orders(s, d.id, account.id, "strategy", minute, journal_orders(decisions))
    traded = any(x.outcome is Outcome.ORDERED for x in decisions)
    strat_store.save_state(s, d.id, after.day, minute, minute if traded else None)
    if not broker.authoritative:
        acct_store.save_mirror(s, account.id, broker.account(), broker.positions(), day.trading_date)
    return _summarise(run_id, d.name, minute, decisions)


def open_account(
    s: Session, deps: Deps, account: BrokerAccount, minute: datetime
) -> tuple[Broker, Account, list[Position]]:
    """Lock the account's balance row; for Alpaca, refresh the mirror from the broker first."""
    balance = acct_store.lock_balance(s, account.id)
    if account.broker == "alpaca":
        broker = deps.alpaca_broker()
        acct, positions = broker.account(), broker.positions()
        acct_store.save_mirror(s, account.id, acct, positions, calendar.trading_date(minute))
        _refresh_open_orders(s, broker, account.id)
        return broker, acct, positions
    positions = acct_store.positions(s, account.id, calendar.trading_date(minute))  # splits applied
    acct = balance or Account(0.0, 0.0, 0.0)
    return deps.simulated_broker(acct, positions, minute, deps.slippage_bps), acct, positions


def _refresh_open_orders(s: Session, broker: Broker, account_id: RowId) -> None:
    """Bring orders still working at the broker up to date (one upsert whatever their number)."""
    updated = []
    for cid in journal.open_orders(s, account_id):
        order = broker.get_by_client_id(cid)
        if order is not None:
            updated.append((order, None))
    journal.record_orders(s, None, account_id, "strategy", None, updated)


def _before_own_orders(
    broker: Broker,
    strategy_id: RowId,
    symbols: Sequence[str],
    minute: datetime,
    acct: Account,
    positions: list[Position],
) -> tuple[Account, list[Position]]:
    """The account as it was before this minute's own orders, which a crashed attempt may have placed.

    A retry must decide what the first attempt decided (same client ids, the broker answers
    "duplicate": adopted, recorded), not see its own fill and hold with no row in paper_trades.
    """
    own = [broker.get_by_client_id(client_order_id(strategy_id, sym, minute)) for sym in symbols]
    qty = {p.symbol: p.qty for p in positions}
    avg = {p.symbol: p.avg_entry_price for p in positions}
    bp = acct.buying_power
    for o in own:
        if o is None or o.filled_qty == 0:
            continue
        signed = o.filled_qty if o.side is Side.BUY else -o.filled_qty
        qty[o.symbol] = qty.get(o.symbol, 0.0) - signed
        bp += signed * (o.filled_avg_price or 0.0)
    if all(o is None for o in own):
        return acct, positions
    before = [Position(sym, q, avg.get(sym, 0.0)) for sym, q in sorted(qty.items()) if q != 0]
    return Account(acct.cash, bp, acct.equity), before


def _features(
    s: Session, symbols: Sequence[str], minute: datetime, cfg: StrategyConfig
) -> dict[str, Features]:
    """Two statements for any number of symbols: last N bars (LATERAL) and flow sums."""
    closes = market.recent_closes(s, symbols, minute, cfg.bars_needed)
    flow = market.flow_sums(s, symbols, minute - timedelta(minutes=cfg.flow_minutes), minute)
    return window_features(symbols, closes, flow, minute, cfg.bars_needed)


def _summarise(run_id: uuid.UUID, name: str, minute: datetime, decisions: Sequence[Decision]) -> StrategyRun:
    if blind := held_through_break(decisions):  # no exit signal until the window refills
        event("series break", level=logging.WARNING, strategy=name, symbols=blind, minute=f"{minute}")
    for x in decisions:
        if x.intent is not None:
            event(
                "order",
                run_id=str(run_id),
                strategy=name,
                minute=minute.isoformat(),
                symbol=x.signal.symbol,
                side=x.intent.side.value,
                qty=x.intent.qty,
                outcome=x.outcome.value,
                risk_code=x.verdict.code if x.verdict else None,
                client_order_id=x.intent.client_order_id,
                error=x.error,
            )
    return processed_run(name, decisions)


def now_minute() -> datetime:
    return calendar.floor_minute(datetime.now(UTC))
