"""The day's strategy_state rows: created for every strategy in one committed statement before any
strategy is claimed, so no worker's claim waits on another's uncommitted insert (issue 17)."""

from __future__ import annotations

from datetime import datetime

from strategy_engine import engine
from strategy_engine.core import calendar
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import Session, connect
from strategy_engine.store import strategies as strat_store
from tests.conftest import seed
from tests.test_exactly_once import T, entry_setup

NAMES = ("a", "b", "c")


def test_every_strategys_day_row_is_committed_before_the_first_strategy_starts(
    session: Session, db_url: str
) -> None:
    for k, name in enumerate(NAMES):
        seed(session, name=name, account=f"sim-{k}", config={"symbols": ["SPY"]})
    entry_setup(session, ("SPY",), T)
    seen: list[int] = []

    def clock() -> datetime:  # asked before each strategy starts: count the rows others can see
        with connect(db_url) as other:
            row = other.fetchone("select count(*) from strategy_state where trading_date = %s", (day,))
            seen.append(int(row[0]) if row else -1)
        return datetime.now(T.tzinfo)

    day = calendar.trading_date(T)
    deps = engine.Deps(clock=clock, policy=TickPolicy(max_lag_seconds=0))
    result = engine.tick(session, T, deps=deps)
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED] * 3
    assert seen[0] == 0  # the invocation's start: no row yet
    assert set(seen[-3:]) == {3}  # by the time each strategy starts, all three are committed


def test_a_claim_never_inserts_the_day_row(session: Session) -> None:
    sid = seed(session, config={"symbols": ["SPY"]})
    day = calendar.trading_date(T)
    with session.transaction():
        assert strat_store.claim(session, sid, day) is None  # no row: nothing to claim
    assert session.fetchone("select count(*) from strategy_state") == (0,)
    strat_store.ensure_day_rows(session, [sid], day)
    strat_store.ensure_day_rows(session, [sid], day)  # twice: still one row
    assert session.fetchone("select count(*) from strategy_state") == (1,)
    with session.transaction():
        claimed = strat_store.claim(session, sid, day)
    assert claimed is not None and (claimed.day.trades_today, claimed.last_run) == (0, None)
