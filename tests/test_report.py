"""Report: the summary's arithmetic on a hand-made replay, and a self-contained HTML page with its PNG."""

from __future__ import annotations

import dataclasses
import html
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from strategy_engine.backtest import backfill, report, synthetic
from strategy_engine.backtest.market_arrays import MINUTE_US, FeatureGrid, to_us
from strategy_engine.backtest.replay import Replay
from strategy_engine.core.models import Action, Decision, Order, Outcome, Side, Signal
from strategy_engine.store import Session
from tests.conftest import DAY, load_market, seed

T0 = to_us(datetime(2025, 6, 13, 13, 30, tzinfo=UTC))


def _fill(
    i: int, side: Side, price: float, reason: str, qty: float = 1.0
) -> tuple[tuple[int, int], Decision, tuple[int, int, Order]]:
    order = Order(f"c{i}", f"b{i}", "AAA", side, qty, "filled", qty, price)
    signal = Signal("AAA", Action(side.value), 1.0, reason, {})
    return (i, 0), Decision(datetime.now(UTC), signal, None, None, Outcome.ORDERED, order), (i, 0, order)


Fill = tuple[int, Side, float, str, float]  # minute, side, price, reason, qty


def _replay(closes: list[float], fills: list[Fill], blocked: int = 0) -> Replay:
    """One symbol; position and cash follow the fills, as the replay loop records them."""
    m = len(closes)
    close = np.array([closes], dtype=np.float64)
    zeros = np.zeros((1, m), dtype=np.int64)
    grid = T0 + MINUTE_US * np.arange(m, dtype=np.int64)
    features = FeatureGrid(
        zeros + 20,
        close,
        close,
        (grid - MINUTE_US)[None, :],  # a bar every minute
        zeros,
        zeros,
        zeros == 0,
        zeros.astype(np.int8),
        zeros.astype(np.int8),
        zeros,
        zeros,
        zeros != 0,
    )
    r = Replay(("AAA",), grid, features, 100.0)
    pos, cash = np.zeros((1, m)), np.full(m, 100.0)
    for i, side, price, reason, qty in fills:
        key, decision, fill = _fill(i, side, price, reason, qty)
        r.decided[key] = decision
        r.fills.append(fill)
        signed = qty if side is Side.BUY else -qty
        pos[0, i:] += signed
        cash[i:] -= signed * price
    for k in range(blocked):
        signal = Signal("AAA", Action.BUY, 1.0, "entry_long", {})
        from strategy_engine.core.models import Verdict

        r.decided[(m - 1 - k, 0)] = Decision(
            datetime.now(UTC), signal, None, Verdict(False, "cool_down", (), False), Outcome.BLOCKED
        )
    r.position_after, r.cash_after = pos, cash
    r.position_before = np.concatenate((np.zeros((1, 1)), pos[:, :-1]), axis=1)
    return r


def test_summary_of_a_winning_and_a_losing_round_trip_and_an_open_short() -> None:
    closes = [10.0, 11.0, 12.0, 12.0, 11.0, 10.0, 10.0, 9.0]
    r = _replay(
        closes,
        [
            (0, Side.BUY, 10.0, "entry_long", 1.0),
            (2, Side.SELL, 12.0, "exit_long", 1.0),  # +2
            (3, Side.BUY, 12.0, "entry_long", 1.0),
            (5, Side.SELL, 10.0, "exit_long", 1.0),  # -2
            (6, Side.SELL, 10.0, "entry_short", 1.0),  # open: marked at 9 -> +1
        ],
        blocked=1,
    )
    s = report.summarise(r)
    equity = [100.0, 101.0, 102.0, 102.0, 101.0, 100.0, 100.0, 101.0]
    assert r.equity.tolist() == equity
    assert s == {
        "orders": 5,
        "realized_pnl": 0.0,
        "unrealized_pnl": 1.0,
        "total_pnl": 1.0,
        "max_drawdown": 2.0,
        "max_drawdown_pct": round(2 / 102, 6),
        "win_rate": 0.5,
        "exposure": 0.75,
        "blocked": {"cool_down": 1},
        "decisions": 8,
        "profit_factor": 1.0,
        "sharpe": None,  # one trading day: not annualised
        "sharpe_note": f"not meaningful: 1 trading day(s) with data < {report.MIN_SHARPE_DAYS}",
        "trading_days": 1,
        "round_trips": 2,
        "failed": 0,
        "initial_cash": 100.0,
        "final_equity": 101.0,
        "minutes": 8,
        "symbols": ["AAA"],
        "holds_by_reason": {"insufficient_bars": 0, "no_entry": 0, "hold_position": 2},  # minutes 1 and 4
        "coverage": None,
        "warnings": [],
    }


def test_sharpe_once_the_range_has_enough_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MIN_SHARPE_DAYS", 1)
    r = _replay([10.0, 11.0, 12.0, 11.0], [(0, Side.BUY, 10.0, "entry_long", 1.0)])
    equity = [100.0, 101.0, 102.0, 101.0]
    rets = np.diff([100.0, *equity]) / np.array([100.0, *equity[:-1]])
    sharpe = float(np.mean(rets) / np.std(rets, ddof=1) * math.sqrt(252 * 390))
    s = report.summarise(r)
    assert s["sharpe"] == pytest.approx(sharpe, abs=1e-3) and s["sharpe_note"] is None


def test_coverage_per_symbol_and_the_warning_below_the_threshold() -> None:
    grid = T0 + MINUTE_US * np.arange(100, dtype=np.int64)
    bars = {"FULL": grid.copy(), "THIN": grid[:5], "WARM": np.array([T0 - MINUTE_US], dtype=np.int64)}
    share, warnings = report.coverage(bars, grid)
    assert share == {"FULL": 1.0, "THIN": 0.05, "WARM": 0.0}
    assert [w.split(":")[0] for w in warnings] == ["THIN", "WARM"] and "5.0%" in warnings[0]


def test_trading_time_skips_days_without_data() -> None:
    r = _replay([10.0] * 4, [])
    day = 86_400_000_000
    r.grid = np.concatenate((r.grid[:2], r.grid[2:] + 3 * day))  # two sessions, three days apart
    r.features = dataclasses.replace(
        r.features, last_ts=np.array([[-1, -1, r.grid[2] - MINUTE_US, r.grid[2]]])
    )
    assert report.trading_time(r).tolist() == [False, False, True, True]  # the first day had no bar


def test_summary_without_trades_then_undefined_ratios_are_null() -> None:
    s = report.summarise(_replay([10.0, 10.0, 10.0], []))
    assert (s["win_rate"], s["profit_factor"], s["sharpe"], s["round_trips"], s["total_pnl"]) == (
        None,
        None,
        None,
        0,
        0.0,
    )


def test_open_long_without_a_close_is_no_round_trip() -> None:
    realized, trips, open_ = report.round_trips(_replay([10.0] * 3, [(0, Side.BUY, 10.0, "entry_long", 1.0)]))
    assert (realized, trips, open_) == (0.0, [], {0: (1.0, 10.0)})


def test_flip_in_one_order_closes_the_long_and_opens_a_short_at_the_flip_price() -> None:
    """Long 1 at 10; one sell of 2 at 12 closes the long (+2) and opens short 1 at 12 (not at
    the long's 10); marked at 11 the short is +1. Equity: 100, 90 + 24 - 12 = 102, 114 - 11 = 103."""
    r = _replay(
        [10.0, 12.0, 11.0],
        [(0, Side.BUY, 10.0, "entry_long", 1.0), (1, Side.SELL, 12.0, "exit_long", 2.0)],
    )
    assert report.round_trips(r) == (2.0, [2.0], {0: (-1.0, 12.0)})
    assert r.equity.tolist() == [100.0, 102.0, 103.0]
    s = report.summarise(r)
    assert (s["realized_pnl"], s["unrealized_pnl"], s["total_pnl"], s["final_equity"]) == (
        2.0,
        1.0,
        3.0,
        103.0,
    )
    assert (s["round_trips"], s["win_rate"], s["profit_factor"], s["orders"]) == (1, 1.0, None, 2)


def test_flip_then_cover_makes_two_round_trips_whether_one_order_or_exit_and_entry() -> None:
    """Long 10 -> 12 (+2), then short 12 -> 9 (+3) through one sell of 2; or long 10 -> 12 (+2),
    short 11 -> 9 (+2) through an exit and an entry. Everything is flat at the end."""
    one = _replay(
        [10.0, 12.0, 11.0, 9.0],
        [
            (0, Side.BUY, 10.0, "entry_long", 1.0),
            (1, Side.SELL, 12.0, "exit_long", 2.0),
            (3, Side.BUY, 9.0, "exit_short", 1.0),
        ],
    )
    two = _replay(
        [10.0, 12.0, 11.0, 9.0],
        [
            (0, Side.BUY, 10.0, "entry_long", 1.0),
            (1, Side.SELL, 12.0, "exit_long", 1.0),
            (2, Side.SELL, 11.0, "entry_short", 1.0),
            (3, Side.BUY, 9.0, "exit_short", 1.0),
        ],
    )
    assert report.round_trips(one) == (5.0, [2.0, 3.0], {})
    assert report.round_trips(two) == (4.0, [2.0, 2.0], {})
    assert one.equity.tolist() == [100.0, 102.0, 103.0, 105.0]  # 90; 114 - 12; 114 - 11; 105
    assert two.equity.tolist() == [100.0, 102.0, 102.0, 104.0]  # 90; 102; 113 - 11; 104
    for r, pnl in ((one, 5.0), (two, 4.0)):
        s = report.summarise(r)
        assert (s["realized_pnl"], s["unrealized_pnl"], s["total_pnl"]) == (pnl, 0.0, pnl)
        assert (s["round_trips"], s["win_rate"], s["final_equity"]) == (2, 1.0, 100.0 + pnl)


def _report(session: Session, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    seed(session, config={"symbols": ["SPY", "IWM", "QQQ"], "min_flow_premium": 20_000, "order_qty": 10})
    load_market(session, synthetic.MarketSpec(("SPY", "IWM", "QQQ"), DAY, DAY))
    html = tmp_path / "out" / "report.html"
    req = backfill.parse_request(
        {
            "strategy": "nft",
            "start": "2025-06-13T13:30:00Z",
            "end": "2025-06-13T20:00:00Z",
            "report_path": str(html),
        }
    )
    return backfill.run_backfill(session, req), html


def test_report_is_one_self_contained_html_with_a_png_beside_it(session: Session, tmp_path: Path) -> None:
    doc, html = _report(session, tmp_path)
    page = html.read_text(encoding="utf-8")
    assert doc["report_path"] == str(html) and doc["report_png"] == str(html.with_suffix(".png"))
    assert html.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for section in (
        "Summary",
        "Equity, drawdown and trades",
        "Orders blocked by risk",
        "price with entries and exits",
        "Parameters",
    ):
        assert section in page
    assert f"<h2>Trades ({doc['orders']})</h2>" in page
    assert (
        len(re.findall(r"<tr><td>2025-06-13T\d\d:\d\d</td><td>(?:IWM|QQQ|SPY)</td>", page)) == doc["orders"]
    )
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', page)
    assert images == ["equity, drawdown and trades", "IWM", "QQQ", "SPY"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|/)""", page)  # no external asset
    assert "<script" not in page and doc["config_hash"] in page
    stored = session.fetchone("select report_path from public.backfill_runs")
    assert stored == (str(html),)


def test_report_shows_values_not_python_reprs_and_records_an_absolute_path(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coverage and holds were dicts printed as {'SPY': 1.0}, warnings a list, a one-day Sharpe
    'None'; a relative --report was recorded relative (useless from another folder)."""
    monkeypatch.chdir(tmp_path)
    seed(session, config={"symbols": ["SPY", "IWM", "QQQ"], "min_flow_premium": 20_000, "order_qty": 10})
    load_market(session, synthetic.MarketSpec(("SPY", "IWM", "QQQ"), DAY, DAY))
    req = backfill.parse_request(
        {
            "strategy": "nft",
            "start": "2025-06-13T13:30:00Z",
            "end": "2025-06-13T20:00:00Z",
            "report_path": "r/x.html",
        }
    )
    doc = backfill.run_backfill(session, req)
    assert doc["sharpe"] is None and doc["sharpe_note"]
    full = str((tmp_path / "r" / "x.html").resolve())
    assert doc["report_path"] == full
    assert session.fetchone("select report_path from public.backfill_runs") == (full,)
    summary = (
        (tmp_path / "r" / "x.html").read_text(encoding="utf-8").split("<h2>Summary</h2>")[1].split("<h2>")[0]
    )
    assert "None" not in summary and "{" not in summary and "[" not in summary
    assert doc["sharpe_note"].startswith("not meaningful: ")
    assert f"<td>sharpe</td><td>{html.escape(doc['sharpe_note'])}</td>" in summary
    assert "<td>coverage</td><td><table><tr><td>IWM</td><td>" in summary
