"""Parity: the backfill gives exactly the decisions and fills of the live tick replayed minute by minute.

Generated data spans 2025-07-02 (full day), 2025-07-03 (half day, 13:00 close), 2025-07-04
(holiday) and 2025-07-07, with missing bars (3%) and a 12-minute feed outage. Three strategies,
each on its own simulated account, with 2 bps of slippage:

- `tight`: limits that make every active-strategy code fire over the range (stale_data,
  max_daily_trades, max_notional_per_trade, max_notional_per_day, max_open_positions,
  cool_down, buying_power), shorts allowed, and a range starting mid-session (warm-up bars).
- `capped`: max_position_size below order_qty, so every entry is blocked by it (an entry's
  position size is always order_qty, so this code cannot share a strategy with later checks);
  its segment starts at the first bar of the data (insufficient_bars).
- `off`: inactive (the kill switch): the tick blocks every order with strategy_inactive; the
  backfill reproduces it with `as_active=False` (a normal backfill replays as if active).

market_closed cannot fire in either path: the tick records a closed minute as a
`market_closed` run with no decisions, and the backfill replays session minutes only. The test
checks both halves of that here; the gate's market_closed check itself is exercised by
`test_backfill.py::test_minute_outside_session_then_market_closed`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import pytest

from strategy_engine import engine
from strategy_engine.backtest import backfill, synthetic
from strategy_engine.core.models import Limits
from strategy_engine.core.risk import RiskCode
from strategy_engine.store import Session, connect
from tests.conftest import load_market, seed

SYMBOLS = ("IWM", "QQQ", "SPY", "XLF")
CONFIG: dict[str, Any] = {
    "symbols": list(SYMBOLS),
    "min_flow_premium": 20_000,
    "order_qty": 10,
    "allow_short": True,
}
TIGHT = Limits(
    max_daily_trades=20,
    max_notional_per_trade=5_000,
    max_notional_per_day=30_000,
    max_open_positions=2,
    cool_down_minutes=10,
)
OUTAGE = (datetime(2025, 7, 7, 15, 0, tzinfo=UTC), datetime(2025, 7, 7, 15, 12, tzinfo=UTC))
SLIPPAGE = 2.0
RANGES = {
    "tight": (datetime(2025, 7, 2, 17, 0, tzinfo=UTC), datetime(2025, 7, 7, 20, 0, tzinfo=UTC)),
    "capped": (datetime(2025, 7, 2, 13, 30, tzinfo=UTC), datetime(2025, 7, 2, 15, 0, tzinfo=UTC)),
    "off": (datetime(2025, 7, 2, 13, 30, tzinfo=UTC), datetime(2025, 7, 2, 15, 0, tzinfo=UTC)),
    "holder": (datetime(2025, 7, 3, 16, 0, tzinfo=UTC), datetime(2025, 7, 7, 14, 30, tzinfo=UTC)),
}
# IWM rises steadily on bullish flow from 2025-07-03 16:00Z to 2025-07-07 14:30Z and splits 2:1
# (recorded) on 2025-07-07 in between: `holder` (IWM only) buys and holds across the split.
HOLD = (datetime(2025, 7, 3, 16, 0, tzinfo=UTC), datetime(2025, 7, 7, 14, 30, tzinfo=UTC))
SPLIT_OPEN = datetime(2025, 7, 7, 13, 30, tzinfo=UTC)  # the first session minute after the IWM split
CLOSED = (
    datetime(2025, 7, 3, 17, 30, tzinfo=UTC),  # after the half day's 13:00 New York close
    datetime(2025, 7, 4, 15, 0, tzinfo=UTC),  # Independence Day
)
LOG = """
    select decision_minute, symbol, action, qty, reason, risk_code, outcome, client_order_id, signal_payload
    from public.strategy_logs where {} order by decision_minute, symbol
"""


# Bad values and vendor spellings, spread over the generated rows (every k-th row by key).
BAD_BAR_VALUES = ("'NaN'", "'Infinity'", "'-Infinity'", "0", "-5", "1e30", "null", "1e400")
BAD_FLOW = (
    "notional = 'NaN'",
    "notional = 'Infinity'",
    "notional = 1e30",
    "notional = -100",
    "size = -3",
    "trade_price = 'NaN'",
    "trade_price = -1, notional = null",
    "notional = null, size = null",
)
SPELLINGS = (
    "option_type = ' CALL'",
    "option_type = 'C'",
    "option_type = 'p'",
    "option_type = 'Put '",
    "option_type = 'straddle'",
    "side = 'ASK'",
    "side = ' bid'",
    "side = 'above_ask'",
    "side = 'Below_Bid'",
    "side = 'mid'",
    "side = 'Buy '",
    "side = 'xyz'",
    "side = ''",
    "side = 'UNKNOWN'",
    "side = 'Above-Ask'",
    "side = 'BELOW BID'",
    "side = E'\\u3000sell\\t'",
    "option_type = E'\\u00a0Put\\u2028'",
)


def spoil(s: Session) -> None:
    """Bad bars (each column in turn), bad flow and vendor spellings; QQQ splits 4:1 on 2025-07-03
    and IWM 2:1 on 2025-07-07 with a corporate action recorded, XLF 10:1 on 2025-07-07 with none
    (a break)."""
    s.execute(
        """
        update market_data_1m m set open = x.c, high = x.c, low = x.c, close = x.c
        from (select ts, 200 * (1 + 0.0005 * row_number() over (order by ts)) as c from market_data_1m
              where symbol = 'IWM' and ts >= %(a)s and ts < %(z)s) x
        where m.symbol = 'IWM' and m.ts = x.ts
        """,
        {"a": HOLD[0], "z": HOLD[1]},
    )
    s.execute("delete from options_flow where underlying = 'IWM' and ts >= %s and ts < %s", HOLD)
    s.execute(
        "insert into options_flow (ts, underlying, option_type, side, size, trade_price, notional)"
        " select ts, 'IWM', 'call', 'buy', 100, 10, 1000000 from market_data_1m"
        " where symbol = 'IWM' and ts >= %s and ts < %s",
        HOLD,
    )
    for k, value in enumerate(BAD_BAR_VALUES):
        column = ("close", "open", "high", "low")[k % 4]
        s.execute(
            f"update market_data_1m set {column} = {value}"
            " where (extract(epoch from ts)::bigint / 60) %% 53 = %s",
            (k * 5,),
        )
    for k, change in enumerate(BAD_FLOW + SPELLINGS):
        s.execute(f"update options_flow set {change} where id %% 61 = %s", (k,))
    for sym, ex, ratio, recorded in (
        ("QQQ", "2025-07-03", 4, True),
        ("XLF", "2025-07-07", 10, False),
        ("IWM", "2025-07-07", 2, True),
    ):
        s.execute(
            "update market_data_1m set open = open / %s, high = high / %s, low = low / %s,"
            " close = close / %s where symbol = %s and ts >= %s::date + interval '4 hours'",
            (ratio, ratio, ratio, ratio, sym, ex),
        )
        if recorded:
            s.execute("insert into corporate_actions values (%s, %s, %s)", (sym, ex, ratio))


def _first_difference(live: list[Any], back: list[Any]) -> str:
    for k, (a, b) in enumerate(zip(live, back, strict=False)):
        if a != b:
            return f"row {k}:\n live     {a}\n backfill {b}"
    return f"lengths differ: live {len(live)}, backfill {len(back)}"


def _live_and_backfill(s: Session) -> dict[str, tuple[backfill.BackfillResult, list[Any], list[Any]]]:
    ids = {
        "tight": seed(s, name="tight", config=CONFIG, limits=TIGHT, cash=5_000, account="a-tight"),
        "capped": seed(
            s, name="capped", config=CONFIG, limits=Limits(max_position_size=5), account="a-capped"
        ),
        "off": seed(s, name="off", config=CONFIG, active=False, account="a-off"),
        "holder": seed(s, name="holder", config={**CONFIG, "symbols": ["IWM"]}, account="a-holder"),
    }
    data = load_market(
        s,
        synthetic.MarketSpec(
            SYMBOLS, date(2025, 7, 2), date(2025, 7, 7), missing_bar_prob=0.03, outages=(OUTAGE,)
        ),
    )
    spoil(s)
    deps = engine.Deps(slippage_bps=SLIPPAGE)
    for minute in data.minutes:
        for name, (start, end) in RANGES.items():
            if start <= minute < end:
                engine.tick(s, minute, only=name, deps=deps)
    for minute in CLOSED:
        assert engine.tick(s, minute, deps=deps).status == "market_closed"
    out = {}
    for name, (start, end) in RANGES.items():
        req = backfill.BackfillRequest(
            strategy=name,
            start=start,
            end=end,
            initial_cash=5_000 if name == "tight" else 100_000,
            slippage_bps=SLIPPAGE,
            report=False,
            all_decisions=True,  # the journal row for row, holds included
        )
        result = backfill.execute(s, req, as_active=name != "off")
        run_id = UUID(result.doc["backfill_run_id"])
        live = s.fetchall(LOG.format("strategy_id = %s and run_mode = 'live'"), (ids[name],))
        back = s.fetchall(LOG.format("backfill_run_id = %s and run_mode = 'backfill'"), (run_id,))
        out[name] = (result, live, back)
    return out


@pytest.fixture(scope="module")
def parity(pg_base_url: str, template_url: str) -> Any:
    """One replay of the range through the tick and the backfill, shared by the tests below."""
    from tests.conftest import fresh_database

    url = fresh_database(pg_base_url)
    with connect(url) as s:
        yield s, _live_and_backfill(s)


@pytest.mark.parametrize("name", ["tight", "capped", "off", "holder"])
def test_backfill_decisions_equal_live_tick_row_for_row(parity: Any, name: str) -> None:
    _, runs = parity
    _, live, back = runs[name]
    assert len(live) == len(back) > 0
    assert live == back, _first_difference(live, back)


def test_backfill_fills_and_final_account_equal_live_tick(parity: Any) -> None:
    s, runs = parity
    result = runs["tight"][0]
    r = result.replay
    live = s.fetchall(
        """
        select t.decision_minute, t.symbol, t.side, t.qty::float8, t.filled_qty::float8,
               t.filled_avg_price::float8, t.client_order_id, t.status
        from public.paper_trades t join public.strategy_definitions d on d.id = t.strategy_id
        where d.name = 'tight' order by t.decision_minute, t.symbol
        """
    )
    back = [
        (
            o.submitted_at,
            o.symbol,
            o.side.value,
            o.qty,
            o.filled_qty,
            o.filled_avg_price or 0.0,
            o.client_order_id,
            o.status,
        )
        for _, _, o in r.fills
    ]
    assert len(live) == result.doc["orders"] > 20
    assert live == back, _first_difference(live, back)
    cash, positions = s.fetchone(
        """
        select b.cash::float8, coalesce((select jsonb_object_agg(p.symbol, p.qty::float8)
          from public.broker_positions p where p.account_id = b.account_id and p.qty <> 0), '{}')
        from public.broker_balances b join public.broker_accounts a on a.id = b.account_id
        where a.name = 'a-tight'
        """
    ) or (None, None)
    assert cash == r.cash_after[-1]
    assert positions == {
        sym: q for sym, q in zip(r.symbols, r.position_after[:, -1].tolist(), strict=True) if q
    }


def test_every_risk_code_but_market_closed_fires_and_every_reason_appears(parity: Any) -> None:
    _, runs = parity
    codes = {row[5] for _, live, _ in runs.values() for row in live if row[5]}
    reasons = {row[4] for _, live, _ in runs.values() for row in live}
    # order_working cannot fire here: simulated orders fill when sent, nothing is ever working
    # (it is proved on the loopback Alpaca in test_reconcile.py)
    assert codes == {c.value for c in RiskCode} - {RiskCode.MARKET_CLOSED.value, RiskCode.ORDER_WORKING.value}
    assert reasons == {
        "insufficient_bars",
        "no_entry",
        "hold_position",
        "entry_long",
        "exit_long",
        "entry_short",
        "exit_short",
    }


def test_closed_minutes_have_no_decisions_in_either_path(parity: Any) -> None:
    s, runs = parity
    closed = s.fetchall(
        "select count(*) from public.strategy_logs where decision_minute = any(%s)", (list(CLOSED),)
    )
    assert closed == [(0,)]
    minutes = {row[0] for row in runs["tight"][2]}
    assert minutes.isdisjoint(CLOSED)
    assert {m.date() for m in minutes} == {date(2025, 7, 2), date(2025, 7, 3), date(2025, 7, 7)}


def test_bad_rows_are_counted_and_splits_never_trade(parity: Any) -> None:
    """The spoiled rows show in the payloads; from the first bar after the unrecorded XLF split
    the strategy holds on insufficient_bars until a whole SMA window has refilled; the recorded
    QQQ split does not interrupt its series."""
    _, runs = parity
    _, live, _ = runs["tight"]
    assert sum(1 for r in live if r[8]["ignored_bars"] > 0) > 100
    assert sum(1 for r in live if r[8]["ignored_flow"] > 0) > 100
    window = 20  # the default sma_window
    xlf = [r for r in live if r[1] == "XLF" and r[0].date() == date(2025, 7, 7)]
    pre = xlf[0][8]["close"]
    k = next(i for i, r in enumerate(xlf) if r[8]["close"] < pre / 5)  # the first post-split bar
    after = xlf[k : k + window - 1]
    assert len(after) == window - 1 and xlf[k - 1][8]["close"] > pre / 2
    assert {(r[4], r[6]) for r in after} == {("insufficient_bars", "held")}
    qqq = [r for r in live if r[1] == "QQQ" and r[0].date() == date(2025, 7, 3)]
    assert qqq and "insufficient_bars" not in {r[4] for r in qqq}


def test_a_recorded_split_while_holding_moves_qty_not_equity(parity: Any) -> None:
    """`holder` holds 10 IWM into the 2:1 split: from the first minute after it, both paths see
    20 shares at half the entry price, and the account's value does not move with the split."""
    s, runs = parity
    result, live, back = runs["holder"]
    assert live == back
    iwm = {r[0]: r[8] for r in live}
    before = max(m for m in iwm if m < SPLIT_OPEN)
    assert (iwm[before]["position_qty"], iwm[SPLIT_OPEN]["position_qty"]) == (10.0, 20.0)
    assert {r[4] for r in live if before <= r[0] <= SPLIT_OPEN} == {"hold_position"}
    # P&L across the split by hand, from the raw closes: the last bar before `before` (b0, 10
    # shares) and the last before the open (b1, pre-split: 20 shares at b1 / 2).
    b0, b1 = (
        s.fetchall(
            "select close::float8 from market_data_1m where symbol = 'IWM' and ts < %s and close > 0"
            " order by ts desc limit 1",
            (t,),
        )[0][0]
        for t in (before, SPLIT_OPEN)
    )
    r = result.replay
    at = {t: i for i, t in enumerate(r.grid.tolist())}
    i0, i1 = (at[int(t.timestamp()) * 1_000_000] for t in (before, SPLIT_OPEN))
    assert r.equity[i1] - r.equity[i0] == pytest.approx(20 * (b1 / 2) - 10 * b0)
    assert abs(r.equity[i1] - r.equity[i0]) < 0.01 * 10 * b0  # a one-minute move, not -50%
    # The tick's account: 20 shares at half the entry price, the split recorded as applied.
    qty, avg, through = s.fetchone(
        "select p.qty::float8, p.avg_entry_price::float8, p.split_applied_through from broker_positions p"
        " join broker_accounts a on a.id = p.account_id where a.name = 'a-holder' and p.symbol = 'IWM'"
    ) or (None, None, None)
    entry = [o.filled_avg_price for _, _, o in r.fills if o.submitted_at < SPLIT_OPEN][-1]
    assert entry and (qty, avg, through) == (20.0, entry / 2, date(2025, 7, 7))
