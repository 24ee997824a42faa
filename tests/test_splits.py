"""A split moves a simulated position's quantity and entry price, never its value, exactly once.

AAA closes at 50 until 2025-06-12 and at 5 from 2025-06-13 on, a 10:1 split recorded in
`corporate_actions`; the account holds 100 shares bought at 50 before it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from strategy_engine import engine
from strategy_engine.core.models import Account, Position, RowId
from strategy_engine.store import Session, market
from strategy_engine.store import accounts as acct_store
from tests.conftest import seed

EX = date(2025, 6, 13)
OPEN = datetime(2025, 6, 13, 13, 30, tzinfo=UTC)
CASH = 10_000.0
CONFIG = {"symbols": ["AAA"], "sma_window": 5, "min_flow_premium": 1e9}  # flow never confirms


def _setup(s: Session) -> RowId:
    seed(s, config=CONFIG, cash=CASH)
    seed(s, name="other", config=CONFIG, cash=CASH)  # a second strategy on the same account
    old = [("AAA", datetime(2025, 6, 12, 19, 50, tzinfo=UTC) + timedelta(minutes=i), 50.0, 50.0, 50.0, 50.0, 1)
           for i in range(10)]  # fmt: skip
    new = [("AAA", OPEN + timedelta(minutes=i), 5.0, 5.0, 5.0, 5.0, 1) for i in range(10)]
    market.insert_bars(s, old + new)
    s.execute("insert into corporate_actions values ('AAA', %s, 10)", (EX,))
    found = acct_store.find_account(s, "sim")
    assert found is not None
    account_id = found[0].id
    acct_store.save_mirror(
        s, account_id, Account(CASH, CASH, CASH), [Position("AAA", 100.0, 50.0)], EX - timedelta(days=1)
    )
    return account_id


def _held(s: Session) -> tuple[float, float, date]:
    row = s.fetchone(
        "select qty::float8, avg_entry_price::float8, split_applied_through from broker_positions"
    )
    assert row is not None
    return row[0], row[1], row[2]


def test_a_split_moves_qty_and_entry_price_once_and_keeps_the_value(session: Session) -> None:
    _setup(session)
    # A split already on record whose ex date is after the minutes ticked (though before today's
    # wall clock): the minute's positions are as of its own New York date, so it is not in them.
    session.execute("insert into corporate_actions values ('AAA', %s, 2)", (EX + timedelta(days=7),))
    value_before = CASH + 100 * 50.0  # by hand: 100 shares at the last pre-split close
    for k in range(3):  # three minutes after the split: applied at the first, never again
        result = engine.tick(session, OPEN + timedelta(minutes=5 + k))
        assert result.status == "ok", result.as_json()
        assert _held(session) == (1000.0, 5.0, EX)
    rows = session.fetchall("select reason, signal_payload from strategy_logs order by id")
    assert {r[0] for r in rows} == {"hold_position"}  # no trade on the split, no break either
    assert {r[1]["position_qty"] for r in rows} == {1000.0}
    assert {r[1]["bars"] for r in rows} == {5}
    (cash,) = session.fetchone("select cash::float8 from broker_balances") or (None,)
    assert cash + 1000 * 5.0 == value_before  # P&L across the split: 0, not -90%


def test_a_position_opened_after_the_split_is_not_adjusted(session: Session) -> None:
    account_id = _setup(session)
    acct_store.save_mirror(session, account_id, Account(CASH, CASH, CASH), [Position("AAA", 7.0, 5.0)], EX)
    assert acct_store.positions(session, account_id, EX) == [Position("AAA", 7.0, 5.0)]
    assert acct_store.positions(session, account_id, EX + timedelta(days=3)) == [Position("AAA", 7.0, 5.0)]
    session.execute("insert into corporate_actions values ('AAA', %s, 0.5)", (EX + timedelta(days=3),))
    got = acct_store.positions(session, account_id, EX + timedelta(days=3))
    assert got == [Position("AAA", 3.5, 10.0)]  # a 1:2 reverse split after it is


@pytest.mark.parametrize("ratio", ["0", "1e-7", "2000000", "'NaN'", "'Infinity'", "-2"])
def test_absurd_split_ratios_are_refused(session: Session, ratio: str) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        session.execute(f"insert into corporate_actions values ('AAA', '2025-06-13', {ratio})")


@pytest.mark.parametrize("ratio", ["0.000001", "1000000"])
def test_the_split_ratio_bounds_are_inclusive(session: Session, ratio: str) -> None:
    session.execute(f"insert into corporate_actions values ('AAA', '2025-06-13', {ratio})")
