"""One minute of one strategy, from features to decisions: shared by the tick and the backfill.

`decide` walks the symbols in ascending order: the strategy decides, the risk gate checks the
order against the context as it stands after the previous symbols' approved orders (reserved),
and sends nothing. The broker's answers come back through `settle`, which releases what a
refused order reserved. The tick posts a strategy's approved orders to Alpaca at once
(`execution.post`); `decide_minute` submits them one after another (the simulated broker, in
the backfill and the tick alike), so this module does no I/O and the backfill runs exactly the
code the tick runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from strategy_engine.core import risk
from strategy_engine.core.data_quality import finite
from strategy_engine.core.errors import OrderRejected
from strategy_engine.core.models import (
    Action,
    Decision,
    Features,
    Limits,
    Order,
    OrderIntent,
    Outcome,
    Side,
    StrategyOutcome,
    StrategyRun,
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


@dataclass(frozen=True, slots=True)
class Decided:
    """A strategy-minute decided, before any order is sent.

    `decisions` in ascending symbol order: held and blocked ones are final; those at `approved`
    (indices) are ORDERED placeholders awaiting the broker's answer (`settle`). Each symbol was
    checked against the context with every earlier approved order reserved (`risk.apply`);
    `start` is the context before any of them.
    """

    decisions: tuple[Decision, ...]
    approved: tuple[int, ...]
    start: RiskContext

    @property
    def intents(self) -> list[OrderIntent]:
        """The approved orders, in symbol order: what to send."""
        return [i for k in self.approved if (i := self.decisions[k].intent) is not None]


Answer = Order | OrderRejected  # the broker's answer to one approved order


def decide(inputs: MinuteInputs, ctx: RiskContext) -> Decided:
    """Decide and check every symbol of the strategy at T, in ascending symbol order; sends nothing."""
    decisions: list[Decision] = []
    approved: list[int] = []
    start = ctx
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
        ctx = risk.apply(ctx, intent)  # reserved: the next symbols are checked with it counted
        approved.append(len(decisions))
        decisions.append(Decision(inputs.minute, signal, intent, verdict, Outcome.ORDERED))
    return Decided(tuple(decisions), tuple(approved), start)


def settle(decided: Decided, answers: Sequence[Answer]) -> tuple[list[Decision], RiskContext]:
    """The decisions with the broker's answers (one per approved order, in order) and the context
    after the orders it took: a refused order, or one the broker holds dead, releases what it had
    reserved (its trade, notional, position and buying power count nowhere). The context is
    `decided.start` itself when no order went through. Raises ValueError on a count mismatch."""
    if len(answers) != len(decided.approved):
        raise ValueError(f"{len(answers)} answers for {len(decided.approved)} orders")
    out = list(decided.decisions)
    ctx = decided.start
    for k, answer in zip(decided.approved, answers, strict=True):
        x = out[k]
        if isinstance(answer, OrderRejected):
            out[k] = replace(x, outcome=Outcome.FAILED, error=str(answer))
        elif answer.died_unfilled:  # e.g. adopted after a retry: the broker had rejected it
            error = f"the broker holds this order as {answer.status}, nothing filled"
            out[k] = replace(x, outcome=Outcome.FAILED, order=answer, error=error)
        else:
            out[k] = replace(x, order=answer)
            ctx = risk.apply(ctx, _intent(x))
    return out, ctx


def _intent(x: Decision) -> OrderIntent:
    if x.intent is None:  # decide() gives every approved decision its intent
        raise ValueError("an approved decision without an order")
    return x.intent


def ask(submit: Submit, intent: OrderIntent) -> Answer:
    """`submit(intent)`, a refusal returned rather than raised (any other error propagates)."""
    try:
        return submit(intent)
    except OrderRejected as exc:
        return exc


def decide_minute(
    inputs: MinuteInputs, ctx: RiskContext, submit: Submit
) -> tuple[list[Decision], RiskContext]:
    """Decide, check, then submit every approved order in symbol order, one after another: the
    backfill's path, and the tick's with the simulated broker (whose fills depend on the order)."""
    decided = decide(inputs, ctx)
    return settle(decided, [ask(submit, i) for i in decided.intents])


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
    """A processed strategy-minute's counts, by outcome."""
    return StrategyRun(
        name,
        StrategyOutcome.PROCESSED,
        decisions=len(decisions),
        orders=sum(1 for x in decisions if x.outcome is Outcome.ORDERED),
        blocked=sum(1 for x in decisions if x.outcome is Outcome.BLOCKED),
        failed=sum(1 for x in decisions if x.outcome is Outcome.FAILED),
        reconciled=sum(1 for x in decisions if x.outcome is Outcome.RECONCILED),
    )
