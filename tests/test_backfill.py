"""Backfill: one validation, what it writes (and never writes), the session grid, market_closed, the sweep."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from strategy_engine.backtest import backfill, replay, synthetic
from strategy_engine.backtest.market_arrays import MINUTE_US, MarketArrays, session_grid, to_datetime, to_us
from strategy_engine.backtest.replay import ReplaySetup
from strategy_engine.backtest.sweep import parse_axes, run_sweep
from strategy_engine.core import calendar
from strategy_engine.core.errors import InputError, NotFound
from strategy_engine.core.models import Limits, Outcome, Side
from strategy_engine.core.strategies import get_spec, parse_config
from strategy_engine.core.strategies.naive_flow_trend import NaiveFlowTrendConfig
from strategy_engine.store import Session
from tests.conftest import DAY, load_market, seed

CONFIG: dict[str, Any] = {"symbols": ["SPY", "IWM", "QQQ"], "min_flow_premium": 20_000, "order_qty": 10}
TABLES = ("strategy_state", "paper_trades", "engine_runs", "broker_positions")


def request(**changes: Any) -> dict[str, Any]:
    return {
        "strategy": "nft",
        "start": "2025-06-13T13:30:00Z",
        "end": "2025-06-13T20:00:00Z",
        "report": False,
    } | changes


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"start": "2025-06-13T20:00:00Z", "end": "2025-06-13T13:30:00Z"}, "must be after start"),
        ({"start": "2025-06-13T13:30:00Z", "end": "2025-06-13T13:30:00Z"}, "must be after start"),
        ({"start": "last tuesday"}, "start: Input should be a valid datetime"),
        ({"end": "2025-06-13T20:00:00"}, "end: Input should have timezone info"),
        ({"start": "2020-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "exceeds the maximum of 400"),
        ({"initial_cash": 0}, "initial_cash: Input should be greater than 0"),
        ({"slippage_bps": -1}, "slippage_bps"),
        ({"report_path": "/tmp/report.pdf"}, "report_path"),  # noqa: S108 - refused, never written
        ({"sweep": "x"}, "sweep: Extra inputs are not permitted"),
    ],
)
def test_request_when_invalid_then_one_readable_line(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        backfill.parse_request(request(**changes))
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_request_times_truncated_to_the_minute_in_utc() -> None:
    req = backfill.parse_request(request(start="2025-06-13T09:30:45.5-04:00"))
    assert req.start == datetime(2025, 6, 13, 13, 30, tzinfo=UTC)


def _counts(s: Session) -> dict[str, int]:
    return {t: (s.fetchone(f"select count(*) from public.{t}") or (0,))[0] for t in TABLES}


def test_backfill_writes_its_run_and_every_decision_and_nothing_live(session: Session) -> None:
    sid = seed(session, config=CONFIG, cash=50_000)
    data = load_market(session, synthetic.MarketSpec(("SPY", "IWM", "QQQ"), DAY, DAY, missing_bar_prob=0.02))
    before, balance = _counts(session), session.fetchall("select cash::float8 from public.broker_balances")
    result = backfill.execute(session, backfill.parse_request(request(initial_cash=25_000)))
    doc, fills = result.doc, result.replay.fills
    run_id = uuid.UUID(doc["backfill_run_id"])
    assert doc["decisions"] == 3 * 390 and doc["orders"] == len(fills) > 0
    # Final equity by hand from the generated bars and the fills: each fill at the close of the
    # last bar before its minute (no slippage), cash moved by every fill, what is left held
    # marked at the last bar before the range's end (20:00), as `status` marks.
    grid = calendar.session_minutes(
        datetime(2025, 6, 13, 13, 30, tzinfo=UTC), datetime(2025, 6, 13, 20, tzinfo=UTC)
    )

    def close_before(symbol: str, t: datetime) -> float:
        return max((ts, c) for sym, ts, _, _, _, c, _ in data.bars if sym == symbol and ts < t)[1]

    cash, held = 25_000.0, {"SPY": 0.0, "IWM": 0.0, "QQQ": 0.0}
    for i, _, order in fills:
        assert order.filled_avg_price == close_before(order.symbol, grid[i])
        signed = order.filled_qty if order.side is Side.BUY else -order.filled_qty
        cash -= signed * order.filled_avg_price
        held[order.symbol] += signed
    end = datetime(2025, 6, 13, 20, tzinfo=UTC)
    equity = cash + sum(q * close_before(sym, end) for sym, q in held.items())
    assert doc["final_equity"] == pytest.approx(equity, abs=0.006)
    assert doc["total_pnl"] == pytest.approx(equity - 25_000, abs=0.006)
    assert doc["total_pnl"] == pytest.approx(doc["realized_pnl"] + doc["unrealized_pnl"], abs=0.02)
    row = session.fetchone(
        "select strategy_id, status, config_hash, parameters, summary, report_path from public.backfill_runs"
    )
    cfg = parse_config("naive_flow_trend", CONFIG)
    assert row is not None
    assert row[:3] == (sid, "done", cfg.fingerprint())
    assert row[3]["initial_cash"] == 25_000 and row[3]["config"] == cfg.model_dump(mode="json")
    assert row[4]["orders"] == doc["orders"] and row[4]["blocked"] == doc["blocked"] and row[5] is None
    logs = session.fetchall(
        "select run_mode, backfill_run_id, engine_run_id, count(*), count(*) filter (where outcome = 'ordered'),"
        " count(*) filter (where outcome = 'held') from public.strategy_logs group by 1, 2, 3"
    )
    # the default journal: order candidates only (no holds); the holds are counted by reason
    candidates = doc["orders"] + sum(doc["blocked"].values()) + doc["failed"]
    assert logs == [("backfill", run_id, None, candidates, doc["orders"], 0)]
    assert sum(doc["holds_by_reason"].values()) + candidates == 3 * 390
    assert doc["coverage"] == {sym: pytest.approx(0.98, abs=0.02) for sym in ("IWM", "QQQ", "SPY")}
    assert doc["sharpe"] is None and doc["sharpe_note"] == "not meaningful: 1 trading day(s) with data < 20"
    every = backfill.run_backfill(
        session, backfill.parse_request(request(initial_cash=25_000, all_decisions=True))
    )
    n = session.fetchone(
        "select count(*), count(*) filter (where outcome = 'held') from public.strategy_logs"
        " where backfill_run_id = %s",
        (uuid.UUID(every["backfill_run_id"]),),
    )
    assert n == (3 * 390, sum(doc["holds_by_reason"].values()))
    assert _counts(session) == before
    assert session.fetchall("select cash::float8 from public.broker_balances") == balance


def test_backfill_reads_a_constant_number_of_statements(session: Session) -> None:
    seed(session, config=CONFIG)
    load_market(session, synthetic.MarketSpec(("SPY", "IWM", "QQQ"), DAY, DAY + timedelta(days=3)))
    used = []
    for end in ("2025-06-13T14:00:00Z", "2025-06-17T20:00:00Z"):
        n = session.statements
        backfill.run_backfill(session, backfill.parse_request(request(end=end)))
        used.append(session.statements - n)
    assert used[0] == used[1] <= 8


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"strategy": "nope"}, NotFound),
        ({"config": {"sma_window": "20"}}, InputError),
        ({"config": {"colour": "red"}}, InputError),
    ],
)
def test_backfill_refused_then_nothing_written(
    session: Session, changes: dict[str, Any], error: type
) -> None:
    seed(session, config=CONFIG)
    with pytest.raises(error):
        backfill.run_backfill(session, backfill.parse_request(request(**changes)))
    assert session.fetchall("select count(*) from public.backfill_runs") == [(0,)]
    assert session.fetchall("select count(*) from public.strategy_logs") == [(0,)]


def _minutes(a: datetime, z: datetime) -> list[int]:
    """Every minute in [a, z) as Unix microseconds, written without the calendar."""
    return [int(a.timestamp()) * 1_000_000 + k * MINUTE_US for k in range(int((z - a).total_seconds()) // 60)]


def _utc(mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(2025, mo, d, h, mi, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (  # Wed from 17:07; Thu Jul 3 half day (13:00 New York); Fri Jul 4 holiday; Mon; Tue to 14:00
            _utc(7, 2, 17, 7),
            _utc(7, 8, 14),
            _minutes(_utc(7, 2, 17, 7), _utc(7, 2, 20))
            + _minutes(_utc(7, 3, 13, 30), _utc(7, 3, 17))
            + _minutes(_utc(7, 7, 13, 30), _utc(7, 7, 20))
            + _minutes(_utc(7, 8, 13, 30), _utc(7, 8, 14)),
        ),
        (  # DST starts Sunday 2025-03-09: 14:30-21:00 UTC before, 13:30-20:00 after
            _utc(3, 6, 0),
            _utc(3, 12, 0),
            _minutes(_utc(3, 6, 14, 30), _utc(3, 6, 21))
            + _minutes(_utc(3, 7, 14, 30), _utc(3, 7, 21))
            + _minutes(_utc(3, 10, 13, 30), _utc(3, 10, 20))
            + _minutes(_utc(3, 11, 13, 30), _utc(3, 11, 20)),
        ),
        (_utc(7, 4, 0), _utc(7, 5, 0), []),  # Independence Day: no session at all
        (  # the last minutes of the Nov 28 half day, listed one by one
            _utc(11, 28, 17, 57),
            _utc(11, 28, 18, 5),
            [int(_utc(11, 28, 17, m).timestamp()) * 1_000_000 for m in (57, 58, 59)],
        ),
    ],
    ids=["half_day_and_holiday", "dst", "holiday", "half_day_close"],
)
def test_session_grid_is_every_session_minute_hand_listed(
    start: datetime, end: datetime, expected: list[int]
) -> None:
    assert len(expected) in {173 + 210 + 390 + 30, 4 * 390, 0, 3}
    assert session_grid(start, end).tolist() == expected
    assert [to_us(t) for t in calendar.session_minutes(start, end)] == expected


def _rising_market(day: date) -> MarketArrays:
    """One symbol whose closes rise every minute and whose flow is bullish every minute, also after the close."""
    bounds = calendar.session_bounds(day)
    assert bounds is not None
    bars = np.arange(to_us(bounds[0]), to_us(bounds[1]), MINUTE_US, dtype=np.int64)
    flow = np.arange(to_us(bounds[0]), to_us(bounds[1]) + 60 * MINUTE_US, MINUTE_US, dtype=np.int64)
    return MarketArrays(
        ("AAA",),
        (bars,),
        (100.0 + 0.01 * np.arange(bars.shape[0], dtype=np.float64),),
        (flow,),
        (np.full(flow.shape[0], 10_000_000, dtype=np.int64),),
        (np.zeros(flow.shape[0], dtype=np.int64),),
    )


def test_minute_outside_session_then_market_closed() -> None:
    """The backfill's grid holds session minutes only, so market_closed cannot fire there (nor in the
    tick, which records a closed minute as a market_closed run). Fed minutes after the close with
    the calendar's answer, the replay's gate blocks the entries with market_closed, before stale_data."""
    market = _rising_market(DAY)
    close = calendar.session_bounds(DAY)
    assert close is not None
    grid = np.arange(to_us(close[1]), to_us(close[1]) + 10 * MINUTE_US, MINUTE_US, dtype=np.int64)
    is_open = np.array([calendar.is_open(to_datetime(t)) for t in grid.tolist()])
    cfg = NaiveFlowTrendConfig(symbols=("AAA",))
    setup = ReplaySetup(uuid.uuid4(), get_spec("naive_flow_trend"), cfg, Limits(), market_open=is_open)
    r = replay.run(market, grid, setup)
    assert not is_open.any()
    assert [(d.signal.reason, d.outcome, d.verdict and d.verdict.code) for d in r.decided.values()] == [
        ("entry_long", Outcome.BLOCKED, "market_closed")
    ] * 10
    open_run = replay.run(market, session_grid(*close), ReplaySetup(uuid.uuid4(), setup.spec, cfg, Limits()))
    assert [f[0] for f in open_run.fills] == [cfg.sma_window]  # enters once enough bars, then holds


def test_sweep_axes_parsed_as_json_values() -> None:
    assert parse_axes(["sma_window=10,20", "min_flow_ratio=0.1,0.2", "allow_short=true,false"]) == {
        "sma_window": [10, 20],
        "min_flow_ratio": [0.1, 0.2],
        "allow_short": [True, False],
    }
    for bad in (["sma_window"], ["=1"], ["a=1", "a=2"]):
        with pytest.raises(InputError):
            parse_axes(bad)


def test_sweep_runs_the_grid_ranked_by_pnl_without_decision_rows(session: Session) -> None:
    seed(session, config=CONFIG)
    load_market(session, synthetic.MarketSpec(("SPY", "IWM", "QQQ"), DAY, DAY))
    req = backfill.parse_request(request())
    doc = run_sweep(session, req, {"sma_window": [10, 20], "min_flow_ratio": [0.1, 0.2]})
    results = doc["results"]
    assert [
        (r["sma_window"], r["min_flow_ratio"])
        for r in sorted(results, key=lambda r: (r["sma_window"], r["min_flow_ratio"]))
    ] == [(10, 0.1), (10, 0.2), (20, 0.1), (20, 0.2)]
    assert [r["total_pnl"] for r in results] == sorted((r["total_pnl"] for r in results), reverse=True)
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    single = backfill.run_backfill(session, req)
    same = next(r for r in results if r["sma_window"] == 20 and r["min_flow_ratio"] == 0.2)
    assert {k: same[k] for k in ("total_pnl", "max_drawdown", "orders")} == {
        k: single[k] for k in ("total_pnl", "max_drawdown", "orders")
    }
    assert session.fetchall("select status, count(*) from public.backfill_runs group by 1 order by 1") == [
        ("done", 1),
        ("sweep", 4),
    ]
    assert session.fetchall(
        "select count(*) from public.strategy_logs where backfill_run_id <> %s",
        (uuid.UUID(single["backfill_run_id"]),),
    ) == [(0,)]


def test_sweep_point_invalid_then_refused_before_any_work(session: Session) -> None:
    seed(session, config=CONFIG)
    with pytest.raises(InputError, match="sma_window"):
        run_sweep(session, backfill.parse_request(request()), {"sma_window": [10, 0]})
    assert session.fetchall("select count(*) from public.backfill_runs") == [(0,)]


def test_sweep_charges_warm_up_and_every_worker_against_the_budget(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strategy_engine.settings import get_settings

    seed(session, config=CONFIG)
    one = 3 * (390 + 30)  # 3 symbols x (390 session minutes + the widest sma_window's warm-up)
    monkeypatch.setenv("BACKFILL_MAX_SYMBOL_MINUTES", str(2 * one - 1))
    get_settings.cache_clear()
    try:
        with pytest.raises(InputError) as info:
            run_sweep(session, backfill.parse_request(request()), {"sma_window": [10, 30]}, workers=2)
        assert str(info.value) == (
            f"backfill of 3 symbols x (390 session minutes + 30 warm-up bars) x 2 workers = {2 * one}"
            f" exceeds the budget of {2 * one - 1} symbol-minutes (BACKFILL_MAX_SYMBOL_MINUTES):"
            " split the range or the symbols"
        )
        assert session.fetchall("select count(*) from public.backfill_runs") == [(0,)]
    finally:
        get_settings.cache_clear()
