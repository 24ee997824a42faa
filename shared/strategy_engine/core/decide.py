"""One minute of one strategy, from features to decisions: shared by the tick and the backfill.

`decide` walks the symbols in ascending order: the strategy decides, the risk gate checks the
order against the context as it stands after the previous symbols' approved orders (reserved),
and sends nothing. The broker's answers come back through `settle`, which releases what a
refused order reserved. The tick posts a strategy's approved orders to Alpaca at once
(`execution.trade`); `decide_minute` submits them one after another (the simulated broker, in
the backfill and the tick alike), so this module does no I/O and the backfill runs exactly the
code the tick runs.
"""

from __future__ import annotations

import hashlib
import json
import re
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


def decision_json(decision: Decision) -> str:
    """What `strategy_logs.signal_payload` holds, as JSON text (the journal's COPY writes it): the
    signal's inputs plus every risk check, and the error if any.

    NaN and infinities become null here, at the journal's boundary, whatever reached them (the
    data-quality rule upstream means none should): the encoder refuses them
    (`allow_nan=False`), and only then is the payload walked to replace them (`finite`). A
    non-finite float KEY (`finite` rewrites values only) is spelled as JSON spells keys: "NaN".
    A NUL character, in a key or a value, is stored as U+FFFD (PostgreSQL cannot hold it)."""
    raw = _payload(decision.signal.payload, decision)
    try:
        text = _STRICT.encode(raw)
    except ValueError:
        text = json.dumps(finite(raw))  # every value finite now: only a key can read "NaN"
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if r"\u0000" in text else text


# `json.dumps(raw, allow_nan=False)` without building an encoder per call (a sixth of its cost).
_STRICT = json.JSONEncoder(allow_nan=False)
# \u0000 after an even number of backslashes (an odd one makes it text: `\\u0000`): PostgreSQL
# refuses it (jsonb; json read as text), so one NUL in a broker's error text would fail the minute's
# writes. json.dumps escapes every NUL this way (ensure_ascii), in keys and values alike.
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


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


Answer = Order | OrderRejected | NotSent  # the broker's answer to one approved order, or why it never went


def decide(inputs: MinuteInputs, ctx: RiskContext) -> Decided:
    """Decide and check every symbol of the strategy at T, in ascending symbol order; sends nothing.

    Each approved order is reserved (`risk.apply`) before the next symbol is checked, so the
    orders of one minute can be posted at once and settled after (`settle`)."""
    decisions: list[Decision] = []
    approved: list[int] = []
    start = ctx
    for symbol in sorted(inputs.config.symbols):
        x = _check(inputs, symbol, ctx)
        if x.outcome is Outcome.ORDERED:
            ctx = risk.apply(ctx, _intent(x))  # reserved: the next symbols are checked with it counted
            approved.append(len(decisions))
        decisions.append(x)
    return Decided(tuple(decisions), tuple(approved), start)


def _check(inputs: MinuteInputs, symbol: str, ctx: RiskContext) -> Decision:
    """One symbol decided and checked against `ctx`: HELD, BLOCKED, or an ORDERED placeholder."""
    feats = inputs.features.get(symbol) or empty_features(symbol)
    signal = inputs.spec.decide(feats, risk.exposure(ctx, symbol), inputs.config)
    if symbol in ctx.working.symbols:
        working = ctx.working.qty.get(symbol, 0.0)
        signal = replace(signal, payload={**signal.payload, "working_qty": working})
        if signal.action is Action.HOLD:  # say why nothing is sent, whatever the strategy thought
            signal = replace(signal, reason=risk.RiskCode.ORDER_WORKING.value)
    if signal.action is Action.HOLD or feats.close is None:
        return Decision(inputs.minute, signal, None, None, Outcome.HELD)
    side = Side.BUY if signal.action is Action.BUY else Side.SELL
    cid = client_order_id(inputs.strategy_id, symbol, inputs.minute)
    intent = OrderIntent(symbol, side, signal.qty, feats.close, cid)
    verdict = risk.evaluate(intent, ctx, inputs.limits)
    outcome = Outcome.ORDERED if verdict.approved else Outcome.BLOCKED
    return Decision(inputs.minute, signal, intent, verdict, outcome)


def settle(decided: Decided, answers: Sequence[Answer]) -> tuple[list[Decision], RiskContext]:
    """The decisions with the broker's answers (one per approved order, in order) and the context
    after the orders it took: a refused order, an order not sent, or one the broker holds dead,
    releases what it had reserved (its trade, notional, position and buying power count nowhere).
    The context is `decided.start` itself when no order went through. Raises ValueError on a
    count mismatch."""
    if len(answers) != len(decided.approved):
        raise ValueError(f"{len(answers)} answers for {len(decided.approved)} orders")
    out = list(decided.decisions)
    ctx = decided.start
    for k, answer in zip(decided.approved, answers, strict=True):
        out[k], ctx = _answered(out[k], answer, ctx)
    return out, ctx


def _answered(x: Decision, answer: Answer, ctx: RiskContext) -> tuple[Decision, RiskContext]:
    """An ORDERED placeholder with the broker's answer; `ctx` with the order applied if it went."""
    if isinstance(answer, NotSent):  # the deadline passed before it could go: logged as not sent
        if x.verdict is None:  # _check gives every approved decision its verdict
            raise ValueError("an approved decision without a verdict")
        return replace(
            x, verdict=_not_sent(x.verdict, answer), outcome=Outcome.BLOCKED, error=str(answer)
        ), ctx
    if isinstance(answer, OrderRejected):
        return replace(x, outcome=Outcome.FAILED, error=str(answer)), ctx
    if answer.died_unfilled:  # e.g. adopted after a retry: the broker had rejected it
        error = f"the broker holds this order as {answer.status}, nothing filled"
        return replace(x, outcome=Outcome.FAILED, order=answer, error=error), ctx
    return replace(x, order=answer), risk.apply(ctx, _intent(x))


def _intent(x: Decision) -> OrderIntent:
    if x.intent is None:  # decide() gives every approved decision its intent
        raise ValueError("an approved decision without an order")
    return x.intent


def ask(submit: Submit, intent: OrderIntent) -> Answer:
    """`submit(intent)`, a refusal or a NotSent returned rather than raised (any other error
    propagates)."""
    try:
        return submit(intent)
    except (OrderRejected, NotSent) as exc:
        return exc


def decide_minute(
    inputs: MinuteInputs, ctx: RiskContext, submit: Submit
) -> tuple[list[Decision], RiskContext]:
    """Decide, check and submit symbol by symbol, in ascending order, each order answered before
    the next symbol is checked (so a refusal releases its reservation at once): the backfill's
    path, and the tick's with the simulated broker (whose fills depend on the order)."""
    decisions: list[Decision] = []
    for symbol in sorted(inputs.config.symbols):
        x = _check(inputs, symbol, ctx)
        if x.outcome is Outcome.ORDERED:
            x, ctx = _answered(x, ask(submit, _intent(x)), ctx)
        decisions.append(x)
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
