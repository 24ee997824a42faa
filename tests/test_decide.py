"""One strategy minute (decide.py): client order ids, symbol order, context threading, failures.

Pure code only: orders go to a `SimulatedBroker` (told the minute, so it never reads the clock)
or to a recording stub.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core import calendar, decide
from strategy_engine.core.decide import MinuteInputs, decide_minute, decision_json
from strategy_engine.core.errors import NotSent, OrderRejected
from strategy_engine.core.exposure import Working
from strategy_engine.core.models import (
    Action,
    Check,
    DayState,
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
from strategy_engine.core.strategies import REGISTRY, parse_config
from tests.test_risk import DESIGN_ORDER

PURE = settings(max_examples=200, derandomize=True, database=None, deadline=None)

T = datetime(2025, 6, 13, 14, 30, tzinfo=UTC)
STRATEGY_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
SIGNAL_KEYS = {"close", "sma", "trend", "bull", "bear", "net", "ratio", "position_qty", "bars"}


def expected_id(strategy_id: object, symbol: str, minute: datetime) -> str:
    key = f"{strategy_id}|{symbol}|{minute.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return "se-" + hashlib.sha256(key.encode()).hexdigest()[:24]


# --- client_order_id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy_id", "symbol", "minute"),
    [
        (STRATEGY_ID, "SPY", T),
        ("b3c1f7e2-0000-4000-8000-00000000abcd", "BRK.B", datetime(2025, 12, 24, 17, 59, tzinfo=UTC)),
        (42, "QQQ", datetime(2020, 3, 9, 13, 30, tzinfo=UTC)),
    ],
    ids=["uuid", "str_id", "int_id"],
)
def test_client_order_id_when_computed_then_se_and_24_hex_of_sha256(
    strategy_id: object, symbol: str, minute: datetime
) -> None:
    cid = decide.client_order_id(strategy_id, symbol, minute)
    assert cid == expected_id(strategy_id, symbol, minute)
    assert cid == decide.client_order_id(strategy_id, symbol, minute)
    assert re.fullmatch(r"se-[0-9a-f]{24}", cid)
    assert len(cid) <= 48


def test_client_order_id_when_known_input_then_known_id() -> None:
    digest = hashlib.sha256(b"00000000-0000-4000-8000-000000000001|SPY|2025-06-13T14:30:00Z").hexdigest()
    assert decide.client_order_id(STRATEGY_ID, "SPY", T) == "se-" + digest[:24]
    assert decide.minute_key(T) == "2025-06-13T14:30:00Z"


def test_client_order_id_when_strategy_symbol_or_minute_differs_then_ids_differ() -> None:
    other = uuid.UUID("00000000-0000-4000-8000-000000000002")
    ids = {
        decide.client_order_id(s, sym, m)
        for s in (STRATEGY_ID, other)
        for sym in ("SPY", "IWM", "QQQ")
        for m in (T, T + timedelta(minutes=1), T + timedelta(days=1))
    }
    assert len(ids) == 2 * 3 * 3


@PURE
@given(
    st.uuids(),
    st.from_regex(r"[A-Z][A-Z0-9.\-]{0,14}", fullmatch=True),
    st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),  # noqa: DTZ001
)
def test_client_order_id_when_any_input_then_stable_short_and_matching_the_formula(
    strategy_id: uuid.UUID, symbol: str, ts: datetime
) -> None:
    minute = calendar.floor_minute(ts)
    cid = decide.client_order_id(strategy_id, symbol, minute)
    assert cid == expected_id(strategy_id, symbol, minute)
    assert len(cid) == 27
    assert decide.client_order_id(strategy_id, symbol, minute + timedelta(minutes=1)) != cid


def test_client_order_id_when_same_instant_in_another_offset_then_same_id() -> None:
    new_york = T.astimezone(timezone(timedelta(hours=-4)))
    assert new_york == T
    assert decide.client_order_id(STRATEGY_ID, "SPY", new_york) == decide.client_order_id(
        STRATEGY_ID, "SPY", T
    )


# --- decide_minute -------------------------------------------------------------------------------

ENTRY = (101.0, 100.0, 10_000_000, 0)  # close, sma, bull cents, bear cents: up + bullish
EXIT = (99.0, 100.0, 0, 0)  # down, neutral: exits a long
QUIET = (100.0, 100.0, 0, 0)  # flat, neutral


def feats(symbol: str, shape: tuple[float, float, int, int] = ENTRY, *, bars: int = 20) -> Features:
    close, sma, bull, bear = shape
    return Features(symbol, bars, close, sma, T - timedelta(minutes=1), bull, bear)


def inputs(
    symbols: list[str],
    features: dict[str, Features],
    limits: Limits | None = None,
    **config: object,
) -> MinuteInputs:
    cfg = parse_config("naive_flow_trend", {"symbols": symbols, **config})
    return MinuteInputs(STRATEGY_ID, REGISTRY["naive_flow_trend"], cfg, limits or Limits(), T, features)


def context(
    features: dict[str, Features],
    positions: dict[str, float] | None = None,
    *,
    buying_power: float = 100_000.0,
    is_active: bool = True,
) -> RiskContext:
    return RiskContext(
        minute=T,
        is_active=is_active,
        market_open=True,
        last_bar_ts={s: f.last_bar_ts for s, f in features.items() if f.last_bar_ts is not None},
        max_bar_age_seconds=120.0,
        day=DayState(calendar.trading_date(T)),
        positions=dict(positions or {}),
        last_trade_at={},
        buying_power=buying_power,
    )


class Recorder:
    """A submit stub that fills at the decision price and remembers the order of calls."""

    def __init__(self, reject: Callable[[OrderIntent], bool] = lambda _: False) -> None:
        self.calls: list[str] = []
        self.reject = reject

    def __call__(self, intent: OrderIntent) -> Order:
        self.calls.append(intent.symbol)
        if self.reject(intent):
            raise OrderRejected(403, f"{intent.symbol} is not tradable")
        return Order(
            intent.client_order_id,
            "b-" + intent.client_order_id,
            intent.symbol,
            intent.side,
            intent.qty,
            "filled",
            intent.qty,
            intent.price,
            T,
        )


def test_decide_minute_when_symbols_unsorted_then_walks_them_in_ascending_order() -> None:
    symbols = ["SPY", "QQQ", "IWM", "DIA"]
    f = {s: feats(s) for s in symbols}
    submit = Recorder()
    decisions, after = decide_minute(inputs(symbols, f), context(f), submit)
    assert [d.signal.symbol for d in decisions] == ["DIA", "IWM", "QQQ", "SPY"]
    assert submit.calls == ["DIA", "IWM", "QQQ", "SPY"]
    assert all(d.outcome is Outcome.ORDERED for d in decisions)
    assert after.day.trades_today == 4
    assert dict(after.positions) == dict.fromkeys(symbols, 1.0)


def test_decide_minute_when_daily_limit_one_and_two_entries_then_first_alphabetically_ordered() -> None:
    f = {"SPY": feats("SPY"), "IWM": feats("IWM"), "QQQ": feats("QQQ")}
    submit = Recorder()
    decisions, after = decide_minute(
        inputs(["SPY", "QQQ", "IWM"], f, Limits(max_daily_trades=1)), context(f), submit
    )
    assert [(d.signal.symbol, d.outcome) for d in decisions] == [
        ("IWM", Outcome.ORDERED),
        ("QQQ", Outcome.BLOCKED),
        ("SPY", Outcome.BLOCKED),
    ]
    assert [d.verdict.code if d.verdict else None for d in decisions] == [
        None,
        "max_daily_trades",
        "max_daily_trades",
    ]
    assert submit.calls == ["IWM"]
    assert after.day.trades_today == 1
    assert dict(after.positions) == {"IWM": 1.0}
    blocked = decisions[1]
    assert blocked.intent is not None
    assert blocked.order is None
    assert blocked.verdict is not None
    assert {c.code: c.observed for c in blocked.verdict.checks}["max_daily_trades"] == 2


def test_decide_minute_when_first_order_spends_buying_power_then_next_symbol_sees_it() -> None:
    f = {"IWM": feats("IWM"), "SPY": feats("SPY")}
    decisions, after = decide_minute(inputs(["SPY", "IWM"], f), context(f, buying_power=150.0), Recorder())
    assert [(d.signal.symbol, d.outcome) for d in decisions] == [
        ("IWM", Outcome.ORDERED),
        ("SPY", Outcome.BLOCKED),
    ]
    assert decisions[1].verdict is not None
    assert decisions[1].verdict.code == "buying_power"
    assert after.buying_power == 49.0


def test_decide_minute_when_exit_at_daily_limit_then_still_ordered_and_counted() -> None:
    f = {"IWM": feats("IWM"), "SPY": feats("SPY", EXIT)}
    limits = Limits(max_daily_trades=1)
    decisions, after = decide_minute(inputs(["SPY", "IWM"], f, limits), context(f, {"SPY": 3.0}), Recorder())
    assert [(d.signal.symbol, d.signal.reason, d.outcome) for d in decisions] == [
        ("IWM", "entry_long", Outcome.ORDERED),
        ("SPY", "exit_long", Outcome.ORDERED),
    ]
    spy = decisions[1]
    assert spy.intent is not None
    assert spy.verdict is not None
    assert (spy.intent.side, spy.intent.qty, spy.verdict.reduce_only) == (Side.SELL, 3.0, True)
    assert after.day.trades_today == 2
    assert after.positions["SPY"] == 0.0


def test_decide_minute_when_submit_rejects_then_that_decision_failed_and_its_reservation_released() -> None:
    # One order at a time (the backfill, the simulated tick): IWM's refusal releases the day's one
    # trade before QQQ is checked, so QQQ goes and SPY is the one blocked.
    f = {s: feats(s) for s in ("IWM", "QQQ", "SPY")}
    submit = Recorder(reject=lambda i: i.symbol == "IWM")
    ctx = context(f)
    decisions, after = decide_minute(
        inputs(["IWM", "QQQ", "SPY"], f, Limits(max_daily_trades=1)), ctx, submit
    )
    assert [(d.signal.symbol, d.outcome) for d in decisions] == [
        ("IWM", Outcome.FAILED),
        ("QQQ", Outcome.ORDERED),
        ("SPY", Outcome.BLOCKED),
    ]
    assert [d.verdict.code for d in decisions[2:] if d.verdict] == ["max_daily_trades"]
    failed = decisions[0]
    assert failed.order is None
    assert failed.error is not None
    assert "IWM is not tradable" in failed.error
    assert failed.intent is not None
    assert failed.verdict is not None
    assert failed.verdict.approved
    assert submit.calls == ["IWM", "QQQ"]
    assert after.day.trades_today == ctx.day.trades_today + 1  # QQQ's only: IWM counts nowhere
    assert json.loads(decision_json(failed))["error"] == failed.error


def test_decide_then_settle_when_the_first_is_refused_then_its_reservation_blocked_the_rest_of_that_minute() -> (
    None
):
    # Every symbol decided before any order is sent (the tick posts an Alpaca strategy's orders at
    # once): IWM's order holds the day's one trade while QQQ and SPY are checked; its refusal
    # releases it only after the minute (conservative: it never lets more through).
    f = {s: feats(s) for s in ("IWM", "QQQ", "SPY")}
    ctx = context(f)
    decided = decide.decide(inputs(["IWM", "QQQ", "SPY"], f, Limits(max_daily_trades=1)), ctx)
    assert [i.symbol for i in decided.intents] == ["IWM"]
    decisions, after = decide.settle(decided, [OrderRejected("40310000", "IWM is not tradable")])
    assert [(d.signal.symbol, d.outcome) for d in decisions] == [
        ("IWM", Outcome.FAILED),
        ("QQQ", Outcome.BLOCKED),
        ("SPY", Outcome.BLOCKED),
    ]
    assert [d.verdict.code for d in decisions[1:] if d.verdict] == ["max_daily_trades", "max_daily_trades"]
    assert after is ctx  # a rejected order counts nowhere


def test_settle_when_an_order_was_not_sent_then_it_is_blocked_by_the_deadline_and_counts_nowhere() -> None:
    f = {s: feats(s) for s in ("IWM", "QQQ")}
    ctx = context(f)
    decided = decide.decide(inputs(["IWM", "QQQ"], f), ctx)
    _, qqq = decided.intents
    placed = Order(qqq.client_order_id, "b-1", "QQQ", qqq.side, qqq.qty, "accepted", 0.0, None)
    decisions, after = decide.settle(decided, [NotSent("deadline", "past the deadline: not sent"), placed])
    assert [(d.signal.symbol, d.outcome) for d in decisions] == [
        ("IWM", Outcome.BLOCKED),
        ("QQQ", Outcome.ORDERED),
    ]
    unsent = decisions[0]
    approved = decided.decisions[0].verdict
    assert approved is not None and approved.approved and not approved.reduce_only
    # the approved verdict, blocked by its own last check: the reason, in words, never passed
    assert unsent.verdict == Verdict(
        False,
        "deadline",
        (*approved.checks, Check("deadline", "past the deadline: not sent", None, False)),
        False,
    )
    assert unsent.error == "past the deadline: not sent"
    assert after.day.trades_today == ctx.day.trades_today + 1  # QQQ only
    assert decide.processed_run("s", decisions).outcome.value == "deadline"


def test_decide_then_settle_with_answers_out_of_the_sent_order_maps_each_to_its_symbol() -> None:
    f = {s: feats(s) for s in ("IWM", "QQQ", "SPY")}
    ctx = context(f)
    decided = decide.decide(inputs(["SPY", "IWM", "QQQ"], f), ctx)
    assert [i.symbol for i in decided.intents] == ["IWM", "QQQ", "SPY"]
    assert decided.start is ctx
    answers: list[Order | OrderRejected] = [
        Order(i.client_order_id, f"b-{i.symbol}", i.symbol, i.side, i.qty, "accepted", 0.0, None)
        for i in decided.intents
    ]
    answers[1] = OrderRejected(None, "QQQ refused")
    decisions, after = decide.settle(decided, answers)
    assert [(d.signal.symbol, d.outcome.value) for d in decisions] == [
        ("IWM", "ordered"),
        ("QQQ", "failed"),
        ("SPY", "ordered"),
    ]
    assert [d.order.broker_order_id if d.order else None for d in decisions] == ["b-IWM", None, "b-SPY"]
    assert after.day.trades_today == ctx.day.trades_today + 2
    assert dict(after.positions) == {**ctx.positions, "IWM": 1.0, "SPY": 1.0}
    with pytest.raises(ValueError, match="2 answers for 3 orders"):
        decide.settle(decided, answers[:2])


def test_decide_minute_when_hold_or_no_data_then_held_without_intent_or_verdict() -> None:
    f = {"IWM": feats("IWM", QUIET), "QQQ": feats("QQQ", bars=5)}  # SPY has no features at all
    submit = Recorder()
    decisions, after = decide_minute(inputs(["SPY", "QQQ", "IWM"], f), context(f), submit)
    assert [(d.signal.symbol, d.signal.reason, d.outcome) for d in decisions] == [
        ("IWM", "no_entry", Outcome.HELD),
        ("QQQ", "insufficient_bars", Outcome.HELD),
        ("SPY", "insufficient_bars", Outcome.HELD),
    ]
    assert all(d.intent is None and d.verdict is None and d.order is None for d in decisions)
    assert submit.calls == []
    assert after == context(f)
    payload = json.loads(decision_json(decisions[0]))
    assert set(payload) >= SIGNAL_KEYS
    assert "risk" not in payload


def test_decide_minute_when_inactive_then_orders_blocked_but_decisions_logged() -> None:
    f = {"IWM": feats("IWM"), "SPY": feats("SPY", EXIT)}
    submit = Recorder()
    decisions, _ = decide_minute(inputs(["SPY", "IWM"], f), context(f, {"SPY": 2.0}, is_active=False), submit)
    assert [(d.signal.action, d.outcome) for d in decisions] == [
        (Action.BUY, Outcome.BLOCKED),
        (Action.SELL, Outcome.BLOCKED),
    ]
    assert {d.verdict.code for d in decisions if d.verdict} == {"strategy_inactive"}
    assert submit.calls == []


def test_decide_minute_when_ordered_then_intent_carries_price_and_client_order_id() -> None:
    f = {"SPY": feats("SPY")}
    broker = SimulatedBroker(10_000.0, now=T)
    decisions, after = decide_minute(inputs(["SPY"], f, order_qty=2), context(f), broker.submit)
    (d,) = decisions
    assert d.intent == OrderIntent("SPY", Side.BUY, 2, 101.0, expected_id(STRATEGY_ID, "SPY", T))
    assert d.order is not None
    assert (d.order.client_order_id, d.order.filled_qty, d.order.filled_avg_price) == (
        d.intent.client_order_id,
        2,
        101.0,
    )
    assert broker.cash == 10_000.0 - 202.0
    assert after.buying_power == 100_000.0 - 202.0


@pytest.mark.parametrize(
    ("positions", "shape", "limits", "outcome"),
    [
        ({}, ENTRY, Limits(max_daily_trades=5, cool_down_minutes=1), Outcome.ORDERED),
        ({}, ENTRY, Limits(max_notional_per_trade=100), Outcome.BLOCKED),
        ({"SPY": 4.0}, EXIT, Limits(max_notional_per_trade=1), Outcome.ORDERED),
    ],
    ids=["ordered_entry", "blocked_entry", "reduce_only_exit"],
)
def test_decision_payload_when_order_then_holds_signal_and_every_risk_check(
    positions: dict[str, float], shape: tuple[float, float, int, int], limits: Limits, outcome: Outcome
) -> None:
    f = {"SPY": feats("SPY", shape)}
    (d,), _ = decide_minute(inputs(["SPY"], f, limits), context(f, positions), Recorder())
    assert d.outcome is outcome
    assert d.verdict is not None
    payload = json.loads(decision_json(d))
    assert set(payload) >= SIGNAL_KEYS | {"risk"}
    assert {k: payload[k] for k in SIGNAL_KEYS} == {k: d.signal.payload[k] for k in SIGNAL_KEYS}
    checks = payload["risk"]["checks"]
    assert [c["code"] for c in checks] == DESIGN_ORDER
    assert all(set(c) == {"code", "observed", "limit", "passed"} for c in checks)
    assert checks == [c.as_json() for c in d.verdict.checks]
    assert payload["risk"]["reduce_only"] is d.verdict.reduce_only
    by_code = {c["code"]: c for c in checks}
    if not d.verdict.reduce_only:
        assert by_code["max_notional_per_trade"]["observed"] == 101.0
        assert by_code["max_notional_per_trade"]["limit"] == limits.max_notional_per_trade
        assert by_code["buying_power"]["limit"] == 100_000.0
    assert by_code["stale_data"]["observed"] == 60.0
    assert by_code["stale_data"]["limit"] == 120.0
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert "risk" not in d.signal.payload  # decision_json copies, never writes into the signal


# --- what the mutation run showed untested (docs/parts/i11b-mutation.md) -------------------------


def test_client_order_id_when_the_machine_runs_in_another_time_zone_then_same_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The id is spelled in UTC whatever the process's local zone: a retry on another machine
    (or a scheduler container with TZ set) must send the same id."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert decide.minute_key(T) == "2025-06-13T14:30:00Z"
        assert decide.client_order_id(STRATEGY_ID, "SPY", T) == expected_id(STRATEGY_ID, "SPY", T)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_decide_minute_when_every_outcome_then_each_decision_is_stamped_with_the_minute() -> None:
    f = {s: feats(s) for s in ("IWM", "QQQ", "SPY")} | {"DIA": feats("DIA", QUIET)}
    submit = Recorder(reject=lambda i: i.symbol == "IWM")
    decisions, _ = decide_minute(
        inputs(["DIA", "IWM", "QQQ", "SPY"], f, Limits(max_daily_trades=1)), context(f), submit
    )
    assert [(d.outcome, d.minute) for d in decisions] == [
        (Outcome.HELD, T),
        (Outcome.FAILED, T),
        (Outcome.ORDERED, T),
        (Outcome.BLOCKED, T),
    ]


def test_decide_minute_when_symbol_has_no_features_then_payload_shows_no_bars_and_no_flow() -> None:
    (d,), _ = decide_minute(inputs(["SPY"], {}), context({}), Recorder())
    assert (d.signal.reason, d.outcome) == ("insufficient_bars", Outcome.HELD)
    assert d.signal.payload == {
        "close": None,
        "sma": None,
        "trend": None,
        "flow": "neutral",
        "bull": 0.0,
        "bear": 0.0,
        "net": 0.0,
        "ratio": 0.0,
        "position_qty": 0.0,
        "bars": 0,
        "ignored_bars": 0,
        "ignored_flow": 0,
        "series_break": False,
    }


def test_journal_orders_when_sent_refused_blocked_and_held_then_sent_and_refused_only() -> None:
    f = {s: feats(s) for s in ("IWM", "QQQ", "SPY")} | {"DIA": feats("DIA", QUIET)}
    submit = Recorder(reject=lambda i: i.symbol == "IWM")
    decisions, _ = decide_minute(
        inputs(["DIA", "IWM", "QQQ", "SPY"], f, Limits(max_daily_trades=1)), context(f), submit
    )
    iwm, qqq = expected_id(STRATEGY_ID, "IWM", T), expected_id(STRATEGY_ID, "QQQ", T)
    assert decide.journal_orders(decisions) == [
        (
            Order(iwm, "", "IWM", Side.BUY, 1.0, "rejected", 0.0, None),
            "broker rejected the order (403): IWM is not tradable",
        ),
        (Order(qqq, "b-" + qqq, "QQQ", Side.BUY, 1.0, "filled", 1.0, 101.0, T), None),
    ]
    assert decide.processed_run("nft", decisions) == StrategyRun(
        "nft", StrategyOutcome.PROCESSED, decisions=4, orders=1, blocked=1, failed=1
    )
    assert decide.processed_run("nft", []) == StrategyRun("nft", StrategyOutcome.PROCESSED)


def test_decision_json_writes_nan_and_infinities_as_null_at_any_depth() -> None:
    f = {"IWM": feats("IWM", QUIET)}
    (held,), _ = decide_minute(inputs(["IWM"], f), context(f), Recorder())
    odd = {"close": float("nan"), "sma": 1.5, "deep": {"x": [float("inf"), 2.0, (float("-inf"),)]}}
    text = decision_json(replace(held, signal=replace(held.signal, payload=odd)))
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"close": None, "sma": 1.5, "deep": {"x": [None, 2.0, [None]]}}
    # a finite payload is encoded as it is
    assert json.loads(decision_json(held)) == {**held.signal.payload}


def test_decide_when_a_working_buy_and_sell_net_to_zero_then_the_payload_says_zero_working() -> None:
    # `Working.qty` holds only symbols with a remainder; `symbols` every one with a working order
    f = {"IWM": feats("IWM")}
    ctx = replace(context(f), working=Working(MappingProxyType({}), frozenset({"IWM"}), 0.0))
    decided = decide.decide(inputs(["IWM"], f), ctx)
    payload = decided.decisions[0].signal.payload
    assert payload["working_qty"] == 0.0 and type(payload["working_qty"]) is float


def test_settle_when_the_broker_holds_the_order_dead_then_failed_and_journaled_with_its_error() -> None:
    # e.g. adopted after a retry: the broker's own order row goes to the journal, with the reason
    f = {"IWM": feats("IWM")}
    ctx = context(f)
    decided = decide.decide(inputs(["IWM"], f), ctx)
    (i,) = decided.intents
    dead = Order(i.client_order_id, "b-1", "IWM", Side.BUY, 1.0, "rejected", 0.0, None)
    decisions, after = decide.settle(decided, [dead])
    assert [(d.outcome, d.order) for d in decisions] == [(Outcome.FAILED, dead)]
    error = "the broker holds this order as rejected, nothing filled"
    assert decide.journal_orders(decisions) == [(dead, error)]
    assert after is ctx


def test_settle_when_an_approved_decision_lacks_its_order_or_verdict_then_value_error_naming_it() -> None:
    f = {"IWM": feats("IWM")}
    decided = decide.decide(inputs(["IWM"], f), context(f))
    (i,) = decided.intents
    placed = Order(i.client_order_id, "b-1", "IWM", Side.BUY, 1.0, "accepted", 0.0, None)
    x = decided.decisions[0]
    no_intent = replace(decided, decisions=(replace(x, intent=None),))
    with pytest.raises(ValueError, match=r"^an approved decision without an order$"):
        decide.settle(no_intent, [placed])
    no_verdict = replace(decided, decisions=(replace(x, verdict=None),))
    with pytest.raises(ValueError, match=r"^an approved decision without a verdict$"):
        decide.settle(no_verdict, [NotSent("deadline", "past the deadline: not sent")])
