from hypothesis import event, given
from tests.test_risk import PURE, minute_case, snapshot
from strategy_engine.decide import decide_minute
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.models import Position

@PURE
@given(minute_case())
def test_stats(case) -> None:
    inputs, ctx, cash = case
    broker = SimulatedBroker(cash, [Position(s, q, 100.0) for s, q in ctx.positions.items()], now=inputs.minute)
    decisions, _ = decide_minute(inputs, ctx, broker.submit)
    for d in decisions:
        event(f"{d.outcome.value}:{d.verdict.code if d.verdict else d.signal.reason}")
