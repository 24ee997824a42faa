"""The backfill report's HTML page: the summary (values as tables and lists, never Python
reprs), the charts of `backtest.report` inline, the blocked orders, the trades, the parameters."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from strategy_engine.backtest.replay import Replay
from strategy_engine.backtest.report import MAX_SYMBOL_CHARTS, _traded, overview_png, symbol_png


def html_value(v: Any, note: Any = None) -> str:
    """A summary value as HTML, never a Python repr: a dict as a table, a list as a list, None
    as "not meaningful" (with `note`, the summary's reason, when there is one)."""
    if v is None:
        text = str(note or "not meaningful")
        return html.escape(text if text.startswith("not meaningful") else f"not meaningful: {text}")
    if isinstance(v, dict | list) and not v:
        return "(none)"
    if isinstance(v, dict):
        return _table(list(v.items()))
    if isinstance(v, list):
        return "<ul>" + "".join(f"<li>{html_value(x)}</li>" for x in v) + "</ul>"
    return html.escape(str(v))


def _table(rows: list[tuple[str, Any]], head: tuple[str, str] | None = None, notes: Any = None) -> str:
    """Key/value rows; a value renders by `html_value`, with `notes[key + "_note"]` if given."""
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html_value(v, (notes or {}).get(f'{k}_note'))}</td></tr>"
        for k, v in rows
    )
    top = f"<tr><th>{head[0]}</th><th>{head[1]}</th></tr>" if head else ""
    return f"<table>{top}{body}</table>"


def _trades_table(r: Replay, limit: int = 2_000) -> str:
    """Every fill (the first `limit`): minute, symbol, side, qty, price, the signal's reason."""
    head = (
        "<tr><th>minute (UTC)</th><th>symbol</th><th>side</th><th>qty</th><th>price</th><th>reason</th></tr>"
    )
    body = "".join(
        f"<tr><td>{np.datetime64(int(r.grid[i]), 'us').astype('datetime64[m]')}</td>"
        f"<td>{html.escape(o.symbol)}</td><td>{o.side.value}</td><td>{o.filled_qty:g}</td>"
        f"<td>{(o.filled_avg_price or 0):,.4f}</td>"
        f"<td>{html.escape(r.decided[(i, j)].signal.reason)}</td></tr>"
        for i, j, o in r.fills[:limit]
    )
    return f"<table>{head}{body}</table>" + (
        f"<p>... and {len(r.fills) - limit} more</p>" if len(r.fills) > limit else ""
    )


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
    metrics = [
        (k, v) for k, v in summary.items() if k not in ("blocked", "symbols") and not k.endswith("_note")
    ]
    blocked = sorted(summary["blocked"].items(), key=lambda kv: -kv[1]) or [("(none)", 0)]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>",
        _table(metrics, ("metric", "value"), summary),
        "<h2>Equity, drawdown and trades</h2>",
        _img(overview, "equity, drawdown and trades"),
        "<h2>Orders blocked by risk</h2>",
        _table(blocked, ("risk code", "orders refused (decisions)")),
        "<h2>Each symbol's price with entries and exits</h2>",
        *(_img(symbol_png(r, j), r.symbols[j]) for j in shown),
        f"<p>Not charted (fewest trades): {html.escape(', '.join(omitted))}</p>" if omitted else "",
        f"<h2>Trades ({len(r.fills)})</h2>",
        _trades_table(r),
        "<h2>Parameters</h2>",
        f"<pre>{html.escape(json.dumps(meta, indent=2, default=str))}</pre>",
        "</body></html>",
    ]
    html_path.write_text("".join(parts), encoding="utf-8")
    return html_path, png_path
