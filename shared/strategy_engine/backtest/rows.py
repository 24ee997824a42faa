"""A replay's decisions as `strategy_logs` COPY text: holds column-wise, order candidates as the tick does.

Why a second spelling of a decision row: a year of holds is hundreds of thousands of rows, and
building each through `Decision` and `json.dumps` costs more than the database takes to store
it. Hold rows are therefore formatted column by column from the replay's arrays, with the same
keys as `naive_flow_trend`'s payload and the same float spelling `json.dumps` uses (`repr`).
Rows of order candidates are the `Decision`s the tick's code produced, through the journal's own
`decision_json`. The parity test compares the stored rows with the tick's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from uuid import UUID

import numpy as np

from strategy_engine.backtest.market_arrays import FloatArray
from strategy_engine.backtest.replay import Replay
from strategy_engine.core.decide import decision_json
from strategy_engine.core.models import Decision, RowId
from strategy_engine.core.strategies.naive_flow_trend import FLOW_NAMES, TREND_NAMES, flow_ratio
from strategy_engine.store.backfill import copy_escape

NULL = "\\N"
PAYLOAD = (
    '{"close":%s,"sma":%s,"trend":%s,"flow":%s,"bull":%s,"bear":%s,"net":%s,'
    '"ratio":%s,"position_qty":%s,"bars":%s,"ignored_bars":%s,"ignored_flow":%s,"series_break":%s}'
)
HOLD_REASONS = ("insufficient_bars", "no_entry", "hold_position")
# Code -> JSON text, indexed by code + 1 (codes are -1, 0, 1); index 3 is "no trend" (too few bars).
TREND_TEXT = [json.dumps(TREND_NAMES[c]) for c in (-1, 0, 1)] + ["null"]
FLOW_TEXT = [json.dumps(FLOW_NAMES[c]) for c in (-1, 0, 1)]


def _floats(a: FloatArray) -> list[str]:
    """repr of each value (json.dumps's spelling), NaN and infinities as JSON null (`finite`)."""
    out = list(map(float.__repr__, a.tolist()))
    for k in np.flatnonzero(~np.isfinite(a)).tolist():
        out[k] = "null"
    return out


def minute_texts(r: Replay) -> list[str]:
    return [t + "Z" for t in np.datetime_as_string(r.grid.astype("datetime64[us]"), unit="s").tolist()]


def decision_line(d: Decision, prefix: str, minute: str) -> str:
    """One decision as the journal's `decision_row` would store it, in COPY text."""
    fields = [
        minute,
        d.signal.symbol,
        d.signal.action.value,
        repr(float(d.signal.qty)),
        d.signal.reason,
        d.verdict.code if d.verdict and d.verdict.code else None,
        d.outcome.value,
        d.intent.client_order_id if d.intent else None,
        decision_json(d),
    ]
    return prefix + "\t".join(NULL if f is None else copy_escape(f) for f in fields) + "\n"


def _hold_lines(r: Replay, j: int, a: int, b: int, template: str, minutes: list[str]) -> list[str]:
    f = r.features
    enough, pos = f.enough[j, a:b], r.position_before[j, a:b]
    bull, bear = f.bull[j, a:b], f.bear[j, a:b]
    reason = np.where(~enough, 0, np.where(pos == 0, 1, 2)).tolist()
    trend = np.where(enough, f.trend[j, a:b] + 1, 3).tolist()
    columns = (
        minutes[a:b],
        [HOLD_REASONS[k] for k in reason],
        _floats(f.close[j, a:b]),
        _floats(f.sma[j, a:b]),
        [TREND_TEXT[k] for k in trend],
        [FLOW_TEXT[k + 1] for k in f.flow[j, a:b].tolist()],
        _floats(bull / 100),
        _floats(bear / 100),
        _floats((bull - bear) / 100),
        _floats(flow_ratio(bull, bear)),
        _floats(pos),
        list(map(str, f.bars[j, a:b].tolist())),
        list(map(str, f.ignored_bars[j, a:b].tolist())),
        list(map(str, f.ignored_flow[j, a:b].tolist())),
        ["true" if x else "false" for x in f.series_break[j, a:b].tolist()],
    )
    return [template % row for row in zip(*columns, strict=True)]


def hold_reasons(r: Replay) -> dict[str, int]:
    """How many (minute, symbol) decisions held, by reason: what the default journal summarises
    instead of writing a row per hold."""
    f, out = r.features, dict.fromkeys(HOLD_REASONS, 0)
    for j in range(len(r.symbols)):
        reason = np.where(~f.enough[j], 0, np.where(r.position_before[j] == 0, 1, 2))
        decided = [i for (i, jj) in r.decided if jj == j]
        reason[decided] = -1
        for k, name in enumerate(HOLD_REASONS):
            out[name] += int(np.count_nonzero(reason == k))
    return out


def decided_lines(r: Replay, run_id: UUID, strategy_id: RowId) -> Iterator[str]:
    """Only the decisions that were order candidates (ordered, blocked, failed: every entry and
    exit signal), minute by minute, as COPY text: the default backfill journal."""
    prefix = f"{NULL}\t{run_id}\tbackfill\t{strategy_id}\t"
    minutes = minute_texts(r)
    batch = [decision_line(d, prefix, minutes[i]) for (i, _), d in sorted(r.decided.items())]
    yield "".join(batch)


def lines(
    r: Replay,
    run_id: UUID,
    strategy_id: RowId,
    *,
    chunk_rows: int = 20_000,
    on_progress: Callable[[float], None] | None = None,
) -> Iterator[str]:
    """Every (minute, symbol) decision of the replay, minute by minute, in chunks of COPY text."""
    prefix = f"{NULL}\t{run_id}\tbackfill\t{strategy_id}\t"
    templates = [
        prefix.replace("%", "%%") + f"%s\t{sym}\thold\t0.0\t%s\t{NULL}\theld\t{NULL}\t" + PAYLOAD + "\n"
        for sym in r.symbols
    ]
    minutes, m = minute_texts(r), r.grid.shape[0]
    chunk_minutes = max(1, chunk_rows // max(1, len(r.symbols)))
    decided = sorted(r.decided.items())
    k = 0
    for a in range(0, m, chunk_minutes):
        b = min(a + chunk_minutes, m)
        per_symbol = [_hold_lines(r, j, a, b, templates[j], minutes) for j in range(len(r.symbols))]
        while k < len(decided) and decided[k][0][0] < b:
            (i, j), d = decided[k]
            per_symbol[j][i - a] = decision_line(d, prefix, minutes[i])
            k += 1
        yield "".join(x for row in zip(*per_symbol, strict=True) for x in row)
        if on_progress is not None:
            on_progress(b / m)
