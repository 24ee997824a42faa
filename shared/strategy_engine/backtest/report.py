"""What a backfill shows a person: summary metrics, one self-contained HTML page, one PNG.

Conventions, stated once: equity at a decision minute is cash plus positions at the last close
known then (bars with ts < T), after that minute's orders. `max_drawdown` is the largest fall
from a running peak of that equity, in dollars (`max_drawdown_pct` as a fraction of the peak).
`sharpe` is mean/stdev of minute-to-minute equity returns (session minutes only, the overnight
gap folded into the next minute) times sqrt(252 * 390), risk-free rate 0; null without
variance. A round trip is a position opened from flat and brought back to flat; `win_rate` and
`profit_factor` (gross profit / gross loss) are over round trips, null when undefined.
`exposure` is the fraction of minutes with any position open.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from strategy_engine.backtest.market_arrays import FloatArray
from strategy_engine.backtest.replay import Replay
from strategy_engine.core.models import Outcome, Side

ANNUAL_MINUTES = 252 * 390
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


def summarise(r: Replay) -> dict[str, Any]:
    """The summary (docs/architecture.md, "Backfill") plus profit factor, Sharpe and round trips.

    Conventions in the module docstring.
    """
    equity = np.concatenate(([r.initial_cash], r.equity))
    peak = np.maximum.accumulate(equity)
    drawdown = peak - equity
    rets = np.diff(equity) / equity[:-1]
    sd = float(np.std(rets, ddof=1)) if rets.shape[0] > 1 else 0.0
    realized, trips, open_ = round_trips(r)
    marks = r.features.close[:, -1] if r.grid.shape[0] else np.zeros(len(r.symbols))
    unrealized = sum(q * (float(marks[j]) - a) for j, (q, a) in open_.items())
    gains, losses = sum(p for p in trips if p > 0), -sum(p for p in trips if p < 0)
    outcomes = Counter(d.outcome for d in r.decided.values())
    blocked = Counter(
        d.verdict.code for d in r.decided.values() if d.outcome is Outcome.BLOCKED and d.verdict
    )
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
        "sharpe": _round(float(np.mean(rets)) / sd * math.sqrt(ANNUAL_MINUTES), 4) if sd > 0 else None,
        "round_trips": len(trips),
        "failed": outcomes[Outcome.FAILED],
        "initial_cash": _round(r.initial_cash),
        "final_equity": _round(float(equity[-1])),
        "minutes": int(r.grid.shape[0]),
        "symbols": list(r.symbols),
    }


def _axis(ax: Any, r: Replay) -> None:
    """Label the minute axis with session dates (minutes are plotted back to back, no overnight gaps)."""
    days = r.grid // 86_400_000_000
    starts = np.flatnonzero(np.diff(days, prepend=-1))
    step = max(1, math.ceil(starts.shape[0] / 8))
    ticks = starts[::step]
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [str(np.datetime64(int(r.grid[i]), "us").astype("datetime64[D]")) for i in ticks], fontsize=7
    )
    ax.grid(alpha=0.3)


def _line(ax: Any, y: FloatArray, **kw: Any) -> None:
    stride = max(1, math.ceil(y.shape[0] / MAX_POINTS))
    x = np.arange(0, y.shape[0], stride)
    ax.plot(x, y[::stride], linewidth=0.8, **kw)


def _price(ax: Any, r: Replay, j: int) -> None:
    _line(ax, r.features.close[j], color="#555")
    for i, jj, o in r.fills:
        if jj != j:
            continue
        entry = r.decided[(i, j)].signal.reason in ENTRY_REASONS
        up = o.side is Side.BUY
        marker, color = ("^" if up else "v", "#1a7f37" if up else "#cf222e") if entry else ("x", "#0969da")
        ax.scatter([i], [o.filled_avg_price], marker=marker, color=color, s=28, zorder=3)
    ax.set_title(f"{r.symbols[j]}: entries (^ buy, v sell short), exits (x)", fontsize=9, loc="left")
    _axis(ax, r)


def _traded(r: Replay, n: int) -> list[int]:
    counts = Counter(j for _, j, _ in r.fills)
    return sorted(range(len(r.symbols)), key=lambda j: (-counts[j], r.symbols[j]))[:n]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def overview_png(r: Replay, symbols: int = 3) -> bytes:
    """Equity, drawdown and the most traded symbols' prices with their trades, in one PNG."""
    from matplotlib.figure import Figure

    shown = _traded(r, symbols)
    fig = Figure(figsize=(11, 3.2 + 2.2 * len(shown)))
    axes = fig.subplots(2 + len(shown), 1, gridspec_kw={"height_ratios": [2.2, 1.0] + [1.6] * len(shown)})
    equity = r.equity
    _line(axes[0], equity, color="#0969da")
    pnl = float(equity[-1]) - r.initial_cash if equity.shape[0] else 0.0
    axes[0].set_title(
        f"Equity ($): P&L {pnl:+,.2f} on {r.initial_cash:,.0f}, {len(r.fills)} fills", fontsize=9, loc="left"
    )
    _axis(axes[0], r)
    _line(
        axes[1],
        np.maximum.accumulate(np.concatenate(([r.initial_cash], equity)))[1:] - equity,
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


def _table(rows: list[tuple[str, Any]], head: tuple[str, str]) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{head[0]}</th><th>{head[1]}</th></tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


CSS = (
    "body{font:14px system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #d0d7de;padding:3px 10px;"
    "text-align:left}th{background:#f6f8fa}img{max-width:100%}pre{background:#f6f8fa;padding:1em}"
)


def write_report(
    html_path: Path, r: Replay, summary: dict[str, Any], meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write the HTML page (images inline) and the overview PNG beside it; return both paths."""
    overview = overview_png(r)
    png_path = html_path.with_suffix(".png")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.write_bytes(overview)
    shown = sorted(_traded(r, MAX_SYMBOL_CHARTS))
    omitted = [s for j, s in enumerate(r.symbols) if j not in shown]
    title = f"Backfill of {meta.get('strategy')}: {meta.get('start')} to {meta.get('end')}"
    metrics = [(k, v) for k, v in summary.items() if k not in ("blocked", "symbols")]
    blocked = sorted(summary["blocked"].items(), key=lambda kv: -kv[1]) or [("(none)", 0)]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>",
        _table(metrics, ("metric", "value")),
        "<h2>Equity, drawdown and trades</h2>",
        _img(overview, "equity, drawdown and trades"),
        "<h2>Orders blocked by risk</h2>",
        _table(blocked, ("risk code", "orders refused (decisions)")),
        "<h2>Each symbol's price with entries and exits</h2>",
        *(_img(symbol_png(r, j), r.symbols[j]) for j in shown),
        f"<p>Not charted (fewest trades): {html.escape(', '.join(omitted))}</p>" if omitted else "",
        "<h2>Parameters</h2>",
        f"<pre>{html.escape(json.dumps(meta, indent=2, default=str))}</pre>",
        "</body></html>",
    ]
    html_path.write_text("".join(parts), encoding="utf-8")
    return html_path, png_path
