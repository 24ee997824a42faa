"""The one data-quality rule of the tick and the backfill: which rows count, and how vendors spell.

Bars: a bar whose close is null, or whose close, open, high or low is not finite, not positive
or above `MAX_PRICE`, is a missing bar (the SQL predicate `store.market.GOOD_BAR`). A null
open, high or low alone is not: close-only feeds exist, and the strategy reads the close.
Flow: an event whose size, trade price or premium is negative, not finite or absurd (trade
price above `MAX_OPTION_PRICE` dollars, premium above `MAX_PREMIUM` dollars) is ignored; sums of
premium are clamped at `MAX_SUM_CENTS`, so no sum can overflow a bigint or an int64.

Vendor spellings: `OPTION_TYPES` and `SIDES` map every accepted spelling (after `spelling`:
BLANKS trimmed, ASCII lower case, '-' and ' ' as '_') to ours; `store.market` generates its SQL
CASE from these very dicts.

Series breaks: consecutive bars whose closes differ by more than a factor `BREAK_RATIO` (after
split adjustment) are a break in the series: only the bars after the last break count, so a
split the engine does not know about reads as too few bars (`insufficient_bars`) until the
window refills, never as a trend. `split_factors` is the adjustment from known splits; the
scalar and array forms use the same multiplications, so the tick and the backfill agree bit for
bit.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from strategy_engine.core.indicators import last_smas
from strategy_engine.core.models import Decision, Features, Position

MAX_PRICE = 1_000_000_000  # dollars per share: no listed stock is near it; 1e30 is a feed error
MAX_OPTION_PRICE = 1_000_000  # dollars per contract share
MAX_PREMIUM = 10_000_000_000  # dollars per flow event ($1e10): a thousand times the largest prints
MAX_SUM_CENTS = 10**17  # a clamp on any flow sum: bull + bear stays far below 2**63
# A one-bar move of more than 20% either way is a break. The smallest common split is 5:4 (1.25);
# a liquid name moving 20% within a minute (or across a missing stretch) is a halt or an event,
# and holding for one SMA window after it is the safe side.
BREAK_RATIO = 1.2

# Every character Python's str.isspace() accepts (tests/test_vendor_spellings.py checks it against
# all of Unicode): stripped from both ends of a spelling, by `spelling` and by the SQL of
# `store.market` alike (btrim with this very set), so no blank flips a direction on one side only.
BLANKS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# ASCII case folding only (never a locale's: the Kelvin sign lowers to 'k' in Python), and '-' and
# ' ' inside a spelling read as '_' ('Above-Ask', 'ABOVE ASK' are above_ask).
FOLD_FROM, FOLD_TO = string.ascii_uppercase + "- ", string.ascii_lowercase + "__"
_FOLD = str.maketrans(FOLD_FROM, FOLD_TO)

OPTION_TYPES: Mapping[str, str] = {"call": "call", "c": "call", "put": "put", "p": "put"}
SIDES: Mapping[str, str] = {
    "buy": "buy",
    "sell": "sell",
    "ask": "buy",  # printed at the ask: the buyer crossed the spread
    "above_ask": "buy",
    "bid": "sell",  # printed at the bid: the seller crossed
    "below_bid": "sell",
    "mid": "unknown",
    "unknown": "unknown",
}
# +1 bullish, -1 bearish: calls bought or puts sold are bullish; an unknown side follows the type.
DIRECTIONS: Mapping[tuple[str, str], int] = {
    ("call", "buy"): 1,
    ("call", "unknown"): 1,
    ("call", "sell"): -1,
    ("put", "sell"): 1,
    ("put", "buy"): -1,
    ("put", "unknown"): -1,
}

if TYPE_CHECKING:  # numpy is imported by the backfill's array forms only, never on the tick's path
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]
    IntArray = NDArray[np.int64]
    BoolArray = NDArray[np.bool_]


def spelling(raw: str) -> str:
    """A vendor's spelling as the tables key it: BLANKS stripped, ASCII lower case, '-' and ' ' as '_'."""
    return raw.strip(BLANKS).translate(_FOLD)


def option_type(raw: object) -> str | None:
    """'call', 'put', or None for anything else."""
    return OPTION_TYPES.get(spelling(raw)) if isinstance(raw, str) else None


def side(raw: object) -> str:
    """'buy', 'sell' or 'unknown' (a missing or unrecognised side is unknown)."""
    return SIDES.get(spelling(raw), "unknown") if isinstance(raw, str) else "unknown"


def direction(raw_type: object, raw_side: object) -> int:
    """+1 bullish, -1 bearish, 0 when the option type is not recognised (ignored)."""
    kind = option_type(raw_type)
    return 0 if kind is None else DIRECTIONS[(kind, side(raw_side))]


def breaks(closes: FloatArray) -> BoolArray:
    """Is each close a break from the one before it? out[i] for the pair (i-1, i), out[0] False.
    A break: two consecutive closes differ by more than BREAK_RATIO, either way
    (max > BREAK_RATIO x min)."""
    import numpy as np

    out = np.zeros(closes.shape[0], dtype=np.bool_)
    if closes.shape[0] > 1:
        a, b = closes[:-1], closes[1:]
        out[1:] = np.maximum(a, b) > BREAK_RATIO * np.minimum(a, b)
    return out


def after_last_break(closes: Sequence[float]) -> int:
    """How many trailing closes follow the last break (`breaks`; all of them when there is none).
    A close above MAX_PRICE (a split-adjusted one can be) is a bad bar: only the closes after it
    count. One pass from the end, the comparison written out (a function call per bar was a
    fifth of the tick's Python at 500 symbols); `breaks` is the same rule over arrays."""
    n = len(closes)
    for i in range(n - 1, -1, -1):
        current = closes[i]
        if current > MAX_PRICE:
            return n - i - 1
        if i > 0:
            previous = closes[i - 1]
            high, low = (previous, current) if previous > current else (current, previous)
            if high > BREAK_RATIO * low:
                return n - i
    return n


def usable_bars(closes: FloatArray, k: IntArray, window: int) -> IntArray:
    """`after_last_break` of the window closes[max(k-window, 0):k], for every k at once."""
    import numpy as np

    idx = np.arange(closes.shape[0], dtype=np.int64)
    # The first usable index each bar imposes: itself after a break, the next one after a bad bar.
    first = np.where(closes > MAX_PRICE, idx + 1, np.where(breaks(closes), idx, -1))
    last = np.maximum.accumulate(first) if closes.shape[0] else idx
    start = np.maximum(k - window, 0)
    lb = np.where(k > 0, last[np.maximum(k - 1, 0)] if closes.shape[0] else -1, -1)
    return np.where(lb > start, k - lb, k - start)


def split_factors(bar_ts: Sequence[Any], splits: Sequence[tuple[Any, float]], t: Any) -> list[float]:
    """Per bar, the product of the ratios of splits (ex time, ratio) with bar < ex <= T.

    A split of ratio r (r new shares per old one; 10 for 10:1, 0.1 for 1:10) divides every
    earlier price by r. `splits` ascend by ex time; times are datetimes or Unix microseconds.
    """
    out = []
    for ts in bar_ts:
        f = 1.0
        for ex, ratio in splits:
            if ts < ex <= t:
                f *= ratio
        out.append(f)
    return out


def split_position(p: Position, ratio: float) -> Position:
    """A position after a split of `ratio` new shares per old: qty x ratio, entry price / ratio
    (its cost, and its value at the adjusted prices, unchanged). The tick's simulated account
    (`store.accounts.positions`) and the backfill's replay apply splits with this function alone."""
    return Position(p.symbol, p.qty * ratio, p.avg_entry_price / ratio)


def split_factor_array(bar_us: IntArray, splits: Sequence[tuple[int, float]], t_us: int) -> FloatArray:
    """`split_factors` for a whole array (the same multiplications in the same order)."""
    import numpy as np

    f = np.ones(bar_us.shape[0], dtype=np.float64)
    for ex, ratio in splits:
        if ex <= t_us:
            f = np.where(bar_us < ex, f * ratio, f)
    return f


def usable_closes(
    closes: Sequence[float], splits: Sequence[tuple[Any, float]], t: Any, times: Sequence[Any] = ()
) -> list[float]:
    """The closes a strategy may use at T: split-adjusted, and only those after the last break.
    `times`: each close's bar time (as `split_factors` reads them), needed only with splits."""
    if splits:
        factors = split_factors(times, splits, t)
        adjusted = [c / f for c, f in zip(closes, factors, strict=True)]
    else:  # every factor would be 1.0, and c / 1.0 is c
        adjusted = list(closes)
    return adjusted[len(adjusted) - after_last_break(adjusted) :]


class Window(NamedTuple):
    """One symbol's last good bars before T (`store.market.recent_closes`): what the strategy may
    see, and what was left out."""

    closes: list[float]  # good closes, oldest first (at most n)
    last: datetime | None  # the last good bar's time (None: no good bar)
    ignored: int  # bad bars between the oldest bar loaded (all history if fewer than n) and T
    splits: list[tuple[datetime, float]]  # (ex time, ratio) with ex <= T, ascending
    # Each close's bar time, only when `splits` is not empty (split factors need them); else [].
    # Decoding 20 timestamps per symbol was a tenth of the tick at 500 symbols.
    times: list[datetime]


def last_close(w: Window, t: Any) -> float | None:
    """The last close a strategy may use at T (`usable_closes`: split-adjusted, a bad bar left out),
    None when there is none: the price of an order or a working order outside the strategy's
    symbols, as the strategy's own features would price it."""
    usable = usable_closes(w.closes, w.splits, t, w.times)
    return usable[-1] if usable else None


def window_features(
    symbols: Sequence[str],
    windows: Mapping[str, Window],
    flow: Mapping[str, tuple[int, int, int]],
    t: Any,
    window: int,
) -> dict[str, Features]:
    """The tick's Features per symbol at T from its loaded bars (`Window`, as
    `store.market.recent_closes` reads them) and flow sums (bull cents, bear cents, ignored
    events): the usable closes and their SMA."""
    ws = [windows[sym] for sym in symbols]
    values = [usable_closes(w.closes, w.splits, t, w.times) for w in ws]
    out: dict[str, Features] = {}
    for sym, w, vals, avg in zip(symbols, ws, values, last_smas(values, window), strict=True):
        bull, bear, ignored_flow = flow.get(sym, (0, 0, 0))
        close, cut = (vals[-1] if vals else None), len(vals) < len(w.closes)
        out[sym] = Features(sym, len(vals), close, avg, w.last, bull, bear, w.ignored, ignored_flow, cut)
    return out


def held_through_break(decisions: Sequence[Decision]) -> list[str]:
    """Symbols whose open position a strategy holds while a series break keeps its window short:
    no exit rule can fire on them until the window refills (the operator is warned)."""
    return [
        d.signal.symbol
        for d in decisions
        if d.signal.payload.get("series_break") and d.signal.payload.get("position_qty")
    ]


def finite(value: Any) -> Any:
    """NaN and infinities become None, at any depth: what jsonb and JSON readers accept."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
