"""A sweep's report: the grid ranked by total P&L, and a heat map of total P&L over two swept
parameters (the first two axes; with more axes each cell shows the best P&L over the others).

One self-contained HTML page (the PNG inline) plus the PNG beside it, like the backfill report.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from strategy_engine.backtest.report import _png
from strategy_engine.backtest.report_html import CSS, _img, html_value

COLUMNS = ("total_pnl", "max_drawdown", "orders", "round_trips", "win_rate", "profit_factor", "sharpe")


def heat_grid(
    results: list[dict[str, Any]], keys: list[str]
) -> tuple[list[Any], list[Any], list[list[float]]]:
    """(x values, y values, best total P&L per (y, x), NaN where no point) for axes keys[0], keys[1]."""
    xs = sorted({r[keys[0]] for r in results}, key=str)
    ys = sorted({r[keys[1]] for r in results}, key=str)
    cells = [[math.nan for _ in xs] for _ in ys]
    for r in results:
        i, j = ys.index(r[keys[1]]), xs.index(r[keys[0]])
        if math.isnan(cells[i][j]) or r["total_pnl"] > cells[i][j]:
            cells[i][j] = float(r["total_pnl"])
    return xs, ys, cells


def heat_png(results: list[dict[str, Any]], keys: list[str]) -> bytes:
    from matplotlib.figure import Figure

    xs, ys, cells = heat_grid(results, keys)
    fig = Figure(figsize=(1.2 + 0.9 * len(xs), 1.2 + 0.6 * len(ys)))
    ax = fig.subplots()
    image = ax.imshow(cells, cmap="RdYlGn", aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(keys[0])
    ax.set_ylabel(keys[1])
    for i, row in enumerate(cells):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:,.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="total P&L ($)")
    ax.set_title("Total P&L by parameter", fontsize=9, loc="left")
    fig.tight_layout()
    return _png(fig)


def write_sweep_report(path: Path, doc: dict[str, Any], keys: list[str]) -> Path:
    """Write the ranked grid (and the heat map, with two or more axes); return the HTML path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"Sweep of {doc['strategy']}: {doc['start']} to {doc['end']}"
    cols = ("rank", *keys, *COLUMNS)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html_value(r.get(c))}</td>" for c in cols) + "</tr>" for r in doc["results"]
    )
    heat = ""
    if len(keys) >= 2:
        png = heat_png(doc["results"], keys)
        path.with_suffix(".png").write_bytes(png)
        heat = f"<h2>Heat map: {html.escape(keys[0])} x {html.escape(keys[1])}</h2>{_img(png, 'heat map')}"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{heat}"
        f"<h2>Grid, best total P&amp;L first</h2><table><tr>{head}</tr>{body}</table></body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path
