from __future__ import annotations

from strategy_engine import engine
from strategy_engine.backtest import synthetic
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.store import Session
from tests.conftest import DAY, load_market, seed


def test_tick_processes_a_session_minute_once(session: Session) -> None:
    seed(session)
    data = load_market(session, synthetic.MarketSpec(("SPY", "IWM", "QQQ"), DAY, DAY))
    t = data.minutes[60]
    first = engine.tick(session, t)
    again = engine.tick(session, t)
    assert first.status == "ok"
    assert first.strategies[0].outcome is StrategyOutcome.PROCESSED
    assert first.strategies[0].decisions == 3
    assert again.strategies[0].outcome is StrategyOutcome.ALREADY_PROCESSED
