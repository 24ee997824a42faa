"""Indicator arithmetic shared, bit for bit, by the tick and the backfill.

Parity between the live tick and the backfill needs the same floating-point operations in the
same order. `window_sums` adds a window left to right with one vectorised add per offset, so a
single window (the tick) and a million windows (the backfill) round identically. numpy's own
`sum`/`mean` would not: its pairwise summation depends on the array's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where arrays are used: the tick's path never loads it
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]


def window_sums(values: FloatArray, window: int) -> FloatArray:
    """Sums of every full window: out[i] = ((v[i] + v[i+1]) + ...) + v[i+window-1]."""
    import numpy as np

    n = values.shape[0] - window + 1
    if n <= 0:
        return np.empty(0, dtype=np.float64)
    out = values[0:n].astype(np.float64, copy=True)
    for k in range(1, window):
        out += values[k : k + n]
    return out


def sma(values: FloatArray, window: int) -> FloatArray:
    """Simple moving average of every full window (see `window_sums` for why not np.mean)."""
    return window_sums(values, window) / float(window)


def last_sma(closes: list[float] | FloatArray, window: int) -> float | None:
    """The tick's SMA: the mean of the last `window` closes, or None with fewer bars."""
    import numpy as np

    arr = np.asarray(closes, dtype=np.float64)
    if arr.shape[0] < window:
        return None
    return float(sma(arr[-window:], window)[0])


def last_smas(windows: list[list[float]], window: int) -> list[float | None]:
    """`last_sma` of many symbols, in plain Python floats: the same additions in the same order
    (left to right), then one division, so the same rounding as the arrays' forms; no numpy."""
    out: list[float | None] = []
    for w in windows:
        if len(w) < window:
            out.append(None)
            continue
        tail = w[-window:]
        total = float(tail[0])
        for v in tail[1:]:
            total += v
        out.append(total / float(window))
    return out
