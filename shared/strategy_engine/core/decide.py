"""One minute of one strategy, from features to decisions: shared by the tick and the backfill.

`decide_minute` walks the symbols in ascending order: the strategy decides, the risk gate
checks the order against the context as it stands after the previous symbols' orders, and an
accepted order updates that context. Submitting is a function passed in (the Alpaca broker in
the tick, the simulated broker in both), so this module does no I/O of its own and the backfill
runs exactly the code the tick runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from strategy_engine.core import risk
from strategy_engine.core.data_quality import finite
from strategy_engine.core.errors import NotSent, OrderRejected
from strategy_engine.core.models import (
    Action,
    Check,
    Decision,
    Features,
    Limits,
    Order,
    OrderIntent,
    Outcome,
    Side,
    StrategyOutcome,
    StrategyRun,
    Verdict,
)
from strategy_engine.core.risk import RiskContext
from strategy_engine.core.strategies import StrategySpec
from strategy_engine.core.strategies.base import StrategyConfig


def minute_key(minute: datetime) -> str:
    """The canonical spelling of T inside client order ids: UTC, seconds, 'Z'."""
    return minute.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def client_order_id(strategy_id: object, symbol: str, minute: datetime) -> str:
    """`se-` + 24 hex of sha256(strategy_id|symbol|T): a retry of the minute sends the same id."""
    digest = hashlib.sha256(f"{strategy_id}|{symbol}|{minute_key(minute)}".encode()).hexdigest()
    return "se-" + digest[:24]


def empty_features(symbol: str) -> Features:
    return Features(symbol, 0, None, None, None, 0, 0)


@dataclass(frozen=True, slots=True)
class MinuteInputs:
    strategy_id: object
    spec: StrategySpec
    config: StrategyConfig
    limits: Limits
    minute: datetime
    features: Mapping[str, Features]


Submit = Callable[[OrderIntent], Order]
DEADLINE = "deadline"  # the reason (NotSent.code) of an order not sent past the invocation's deadline


def _payload(signal_payload: dict[str, Any], decision: Decision) -> dict[str, Any]:
    out = dict(signal_payload)
    if decision.verdict is not None:
        out["risk"] = {
            "reduce_only": decision.verdict.reduce_only,
            "checks": [c.as_json() for c in decision.verdict.checks],
        }
    if decision.error is not None:
        out["error"] = decision.error
    return out


def decision_payload(decision: Decision) -> dict[str, Any]:
    """What `strategy_logs.signal_payload` holds: the signal's inputs plus every risk check.

    NaN and infinities become null here, at the journal's boundary, whatever reached them
    (the data-quality rule upstream means none should).
    """
    out: dict[str, Any] = finite(_payload(decision.signal.payload, decision))
    return out


def decide_minute(
    inputs: MinuteInputs, ctx: RiskContext, submit: Submit
) -> tuple[list[Decision], RiskContext]:
    """Decide, check and submit every symbol of the strategy at T, in ascending symbol order."""
    decisions: list[Decision] = []
    for symbol in sorted(inputs.config.symbols):
        feats = inputs.features.get(symbol) or empty_features(symbol)
        signal = inputs.spec.decide(feats, risk.exposure(ctx, symbol), inputs.config)
        if symbol in ctx.working.symbols:
            working = ctx.working.qty.get(symbol, 0.0)
            signal = replace(signal, payload={**signal.payload, "working_qty": working})
            if signal.action is Action.HOLD:  # say why nothing is sent, whatever the strategy thought
                signal = replace(signal, reason=risk.RiskCode.ORDER_WORKING.value)
        if signal.action is Action.HOLD or feats.close is None:
            decisions.append(Decision(inputs.minute, signal, None, None, Outcome.HELD))
            continue
        side = Side.BUY if signal.action is Action.BUY else Side.SELL
        cid = client_order_id(inputs.strategy_id, symbol, inputs.minute)
        intent = OrderIntent(symbol, side, signal.qty, feats.close, cid)
        verdict = risk.evaluate(intent, ctx, inputs.limits)
        if not verdict.approved:
            decisions.append(Decision(inputs.minute, signal, intent, verdict, Outcome.BLOCKED))
            continue
        try:
            order = submit(intent)
        except NotSent as exc:  # the deadline passed before it could go: logged as not sent
            unsent = _not_sent(verdict, exc)
            decisions.append(Decision(inputs.minute, signal, intent, unsent, Outcome.BLOCKED, error=str(exc)))
            continue
        except OrderRejected as exc:
            decisions.append(Decision(inputs.minute, signal, intent, verdict, Outcome.FAILED, error=str(exc)))
            continue
        if order.died_unfilled:  # e.g. adopted after a retry: the broker had rejected it
            error = f"the broker holds this order as {order.status}, nothing filled"
            decisions.append(
                Decision(inputs.minute, signal, intent, verdict, Outcome.FAILED, order=order, error=error)
            )
            continue
        ctx = risk.apply(ctx, intent)
        decisions.append(Decision(inputs.minute, signal, intent, verdict, Outcome.ORDERED, order=order))
    return decisions, ctx


def _not_sent(verdict: Verdict, exc: NotSent) -> Verdict:
    """The approved verdict, blocked by the reason it was not sent (its own check, last)."""
    checks = (*verdict.checks, Check(exc.code, str(exc), None, False))
    return Verdict(False, exc.code, checks, verdict.reduce_only)


def journal_orders(decisions: Sequence[Decision]) -> list[tuple[Order, str | None]]:
    """The orders a minute's decisions put in `paper_trades`: sent ones, and refused ones with their error."""
    out: list[tuple[Order, str | None]] = []
    for x in decisions:
        if x.outcome is Outcome.ORDERED and x.order is not None:
            out.append((x.order, None))
        elif x.outcome is Outcome.FAILED and x.order is not None:
            out.append((x.order, x.error))
        elif x.outcome is Outcome.FAILED and x.intent is not None:
            i = x.intent
            out.append(
                (Order(i.client_order_id, "", i.symbol, i.side, i.qty, "rejected", 0.0, None), x.error)
            )
    return out


def processed_run(name: str, decisions: Sequence[Decision]) -> StrategyRun:
    """A processed strategy-minute's counts, by outcome; `deadline` when an order was not sent
    because the invocation's deadline passed (what was done is committed all the same)."""
    cut = any(x.verdict is not None and x.verdict.code == DEADLINE for x in decisions)
    return StrategyRun(
        name,
        StrategyOutcome.DEADLINE if cut else StrategyOutcome.PROCESSED,
        decisions=len(decisions),
        orders=sum(1 for x in decisions if x.outcome is Outcome.ORDERED),
        blocked=sum(1 for x in decisions if x.outcome is Outcome.BLOCKED),
        failed=sum(1 for x in decisions if x.outcome is Outcome.FAILED),
        reconciled=sum(1 for x in decisions if x.outcome is Outcome.RECONCILED),
    )
