"""What a backfill shows a person: summary metrics, one self-contained HTML page, one PNG.

Conventions, stated once: equity at a decision minute is cash plus positions at the last close
known then (bars with ts < T), after that minute's orders. `max_drawdown` is the largest fall
from a running peak of that equity, in dollars (`max_drawdown_pct` as a fraction of the peak).
`sharpe` is mean/stdev of minute-to-minute equity returns (session minutes only, the overnight
gap folded into the next minute) times sqrt(252 * 390), risk-free rate 0; null without
variance. A round trip is a position opened from flat and brought back to flat; `win_rate` and
`profit_factor` (gross profit / gross loss) are over round trips, null when undefined.
`exposure` is the fraction of minutes with any position open. With `end_marks` (the backfill),
what is held at the end is marked at the last bar before the range's end, as `status` marks it.

Sharpe is reported only for a range of at least MIN_SHARPE_DAYS trading days (with data);
below that it is null with `sharpe_note` saying why (a day's minute returns annualised say
nothing). `coverage` is, per symbol, the share of the range's session minutes with a bar; below
COVERAGE_WARN a line in `warnings` says so. `holds_by_reason` counts the hold decisions (the
default journal does not write them). Charts share one trading-time axis: session minutes only,
back to back, and only days on which some symbol has a bar.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from strategy_engine.backtest.market_arrays import FloatArray, IntArray
from strategy_engine.backtest.replay import Replay
from strategy_engine.core.models import Outcome, Side

ANNUAL_MINUTES = 252 * 390
MIN_SHARPE_DAYS = 20  # about a trading month
COVERAGE_WARN = 0.9  # warn when a symbol has bars in fewer than 90% of the session minutes
DAY_US = 86_400_000_000
MAX_SYMBOL_CHARTS = 12
MAX_POINTS = 4_000
ENTRY_REASONS = ("entry_long", "entry_short")


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def round_trips(r: Replay) -> tuple[float, list[float], dict[int, tuple[float, float]]]:
    """(realized P&L, P&L of each round trip, open positions as symbol -> (qty, avg price))."""
    book: dict[int, tuple[float, float, float]] = {}  # symbol -> (qty, avg price, P&L of the trip)
    realized, trips = 0.0, []
    for _, j, o in r.fills:
        price = float(o.filled_avg_price or 0.0)
        signed = o.filled_qty if o.side is Side.BUY else -o.filled_qty
        qty, avg, pnl = book.get(j, (0.0, 0.0, 0.0))
        if qty != 0 and (qty > 0) != (signed > 0):
            gain = min(abs(signed), abs(qty)) * (price - avg) * (1.0 if qty > 0 else -1.0)
            realized, pnl = realized + gain, pnl + gain
        new = qty + signed
        if qty != 0 and (new == 0 or (new > 0) != (qty > 0)):
            trips.append(pnl)
            qty, pnl = 0.0, 0.0
        if new == 0:
            book.pop(j, None)
        elif qty == 0:
            book[j] = (new, price, pnl)
        else:
            book[j] = (new, (qty * avg + signed * price) / new if abs(new) > abs(qty) else avg, pnl)
    return realized, trips, {j: (q, a) for j, (q, a, _) in book.items()}


def summarise(
    r: Replay, bar_ts: dict[str, IntArray] | None = None, end_marks: dict[str, float] | None = None
) -> dict[str, Any]:
    """The summary (docs/architecture.md, "Backfill") plus profit factor, Sharpe and round trips
    (conventions in the module docstring); with `bar_ts` (each symbol's bar times, Unix µs) also
    the coverage and its warnings. `end_marks`: symbol -> close at the range's end (module doc)."""
    from strategy_engine.backtest.rows import hold_reasons

    cover, warnings = coverage(bar_ts, r.grid) if bar_ts is not None else (None, [])
    equity = np.concatenate(([r.initial_cash], r.equity))
    marks = r.features.close[:, -1] if r.grid.shape[0] else np.zeros(len(r.symbols))
    if end_marks is not None and r.grid.shape[0]:
        marks = np.array([end_marks.get(sym, marks[j]) for j, sym in enumerate(r.symbols)])
        held = r.position_after[:, -1]
        equity[-1] = r.cash_after[-1] + float(np.where(held != 0, held * np.nan_to_num(marks), 0.0).sum())
    peak = np.maximum.accumulate(equity)
    drawdown = peak - equity
    rets = np.diff(equity) / equity[:-1]
    sd = float(np.std(rets, ddof=1)) if rets.shape[0] > 1 else 0.0
    realized, trips, open_ = round_trips(r)
    unrealized = sum(q * (float(marks[j]) - a) for j, (q, a) in open_.items())
    gains, losses = sum(p for p in trips if p > 0), -sum(p for p in trips if p < 0)
    outcomes = Counter(d.outcome for d in r.decided.values())
    blocked = Counter(
        d.verdict.code for d in r.decided.values() if d.outcome is Outcome.BLOCKED and d.verdict
    )
    days = int(np.unique(r.grid[trading_time(r)] // DAY_US).shape[0])
    return {
        "orders": outcomes[Outcome.ORDERED],
        "realized_pnl": _round(realized),
        "unrealized_pnl": _round(unrealized),
        "total_pnl": _round(float(equity[-1]) - r.initial_cash),
        "max_drawdown": _round(float(drawdown.max())),
        "max_drawdown_pct": _round(float((drawdown / peak).max()), 6),
        "win_rate": _round(sum(1 for p in trips if p > 0) / len(trips), 4) if trips else None,
        "exposure": _round(
            float(np.any(r.position_after != 0, axis=0).mean()) if r.grid.shape[0] else 0.0, 4
        ),
        "blocked": dict(sorted((str(k), v) for k, v in blocked.items())),
        "decisions": len(r.symbols) * int(r.grid.shape[0]),
        "profit_factor": _round(gains / losses, 4) if losses > 0 else None,
        "sharpe": _round(float(np.mean(rets)) / sd * math.sqrt(ANNUAL_MINUTES), 4)
        if sd > 0 and days >= MIN_SHARPE_DAYS
        else None,
        "sharpe_note": None
        if days >= MIN_SHARPE_DAYS
        else f"not meaningful: {days} trading day(s) with data < {MIN_SHARPE_DAYS}",
        "trading_days": days,
        "round_trips": len(trips),
        "failed": outcomes[Outcome.FAILED],
        "initial_cash": _round(r.initial_cash),
        "final_equity": _round(float(equity[-1])),
        "minutes": int(r.grid.shape[0]),
        "symbols": list(r.symbols),
        "holds_by_reason": hold_reasons(r),
        "coverage": cover,
        "warnings": warnings,
    }


def trading_time(r: Replay) -> NDArray[np.bool_]:
    """The grid minutes of days on which some symbol has a bar (the charts' x axis)."""
    day = r.grid // DAY_US
    fresh = (r.features.last_ts >= (day * DAY_US)[None, :]).any(axis=0) if len(r.symbols) else day < 0
    return np.isin(day, np.unique(day[fresh]))


def coverage(market_ts: dict[str, IntArray], grid: IntArray) -> tuple[dict[str, float], list[str]]:
    """Per symbol, the share of the grid's session minutes with a bar; warnings below COVERAGE_WARN."""
    share = {sym: float(np.isin(grid, ts).mean()) if grid.shape[0] else 0.0 for sym, ts in market_ts.items()}
    warn = [
        f"{sym}: bars in {v:.1%} of the session minutes (< {COVERAGE_WARN:.0%}): results are thin"
        for sym, v in share.items()
        if v < COVERAGE_WARN
    ]
    return {k: round(v, 4) for k, v in share.items()}, warn


def _axis(ax: Any, r: Replay) -> None:
    """Label the trading-time axis with session dates (minutes back to back, no nights, weekends
    or days without data)."""
    days = r.grid[trading_time(r)] // DAY_US
    starts = np.flatnonzero(np.diff(days, prepend=-1))
    step = max(1, math.ceil(starts.shape[0] / 8))
    ticks = starts[::step]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(np.datetime64(int(d), "D")) for d in days[ticks]], fontsize=7)
    ax.grid(alpha=0.3)


def _line(ax: Any, y: FloatArray, keep: NDArray[np.bool_], **kw: Any) -> None:
    y = y[keep]
    stride = max(1, math.ceil(y.shape[0] / MAX_POINTS))
    x = np.arange(0, y.shape[0], stride)
    ax.plot(x, y[::stride], linewidth=0.8, **kw)


def _price(ax: Any, r: Replay, j: int) -> None:
    keep = trading_time(r)
    x_of = np.cumsum(keep) - 1
    _line(ax, r.features.close[j], keep, color="#555")
    for i, jj, o in r.fills:
        if jj != j:
            continue
        x = int(x_of[i])
        entry = r.decided[(i, j)].signal.reason in ENTRY_REASONS
        up = o.side is Side.BUY
        marker, color = ("^" if up else "v", "#1a7f37" if up else "#cf222e") if entry else ("x", "#0969da")
        ax.scatter([x], [o.filled_avg_price], marker=marker, color=color, s=28, zorder=3)
    ax.set_title(f"{r.symbols[j]}: entries (^ buy, v sell short), exits (x)", fontsize=9, loc="left")
    _axis(ax, r)


def _traded(r: Replay, n: int) -> list[int]:
    counts = Counter(j for _, j, _ in r.fills)
    return sorted(range(len(r.symbols)), key=lambda j: (-counts[j], r.symbols[j]))[:n]


def _png(fig: Any) -> bytes:
    fig.savefig(buf := io.BytesIO(), format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def overview_png(r: Replay, symbols: int = 3) -> bytes:
    """Equity, drawdown and the most traded symbols' prices with their trades, in one PNG."""
    from matplotlib.figure import Figure

    shown = _traded(r, symbols)
    fig = Figure(figsize=(11, 3.2 + 2.2 * len(shown)))
    axes = fig.subplots(2 + len(shown), 1, gridspec_kw={"height_ratios": [2.2, 1.0] + [1.6] * len(shown)})
    equity, keep = r.equity, trading_time(r)
    _line(axes[0], equity, keep, color="#0969da")
    pnl = float(equity[-1]) - r.initial_cash if equity.shape[0] else 0.0
    axes[0].set_title(
        f"Equity ($): P&L {pnl:+,.2f} on {r.initial_cash:,.0f}, {len(r.fills)} fills", fontsize=9, loc="left"
    )
    _axis(axes[0], r)
    _line(
        axes[1],
        np.maximum.accumulate(np.concatenate(([r.initial_cash], equity)))[1:] - equity,
        keep,
        color="#cf222e",
    )
    axes[1].set_title("Drawdown from peak ($)", fontsize=9, loc="left")
    _axis(axes[1], r)
    for ax, j in zip(axes[2:], shown, strict=True):
        _price(ax, r, j)
    fig.tight_layout()
    return _png(fig)


def symbol_png(r: Replay, j: int) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 2.6))
    _price(fig.subplots(), r, j)
    fig.tight_layout()
    return _png(fig)
