"""Naive Flow + Trend: an SMA trend confirmed by options-flow sentiment.

The rules are docs/architecture.md, "Naive Flow + Trend".

The classifiers take numpy arrays or scalars alike, so the backfill classifies a year of
minutes in one call and the tick classifies one minute with the very same arithmetic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from strategy_engine.core.models import Action, Features, Signal
from strategy_engine.core.strategies.base import StrategyConfig, qty_problem

if TYPE_CHECKING:  # numpy is imported by the array forms only: the tick's path never loads it
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

UP, FLAT, DOWN = 1, 0, -1
BULLISH, NEUTRAL, BEARISH = 1, 0, -1
TREND_NAMES = {UP: "up", FLAT: "flat", DOWN: "down"}
FLOW_NAMES = {BULLISH: "bullish", NEUTRAL: "neutral", BEARISH: "bearish"}


class NaiveFlowTrendConfig(StrategyConfig):
    sma_window: int = Field(default=20, ge=1, le=10_000)
    trend_band_bps: float = Field(default=5, ge=0, le=10_000)
    flow_lookback_minutes: int = Field(default=15, ge=1, le=1440)
    min_flow_premium: float = Field(default=50_000, ge=0)
    min_flow_ratio: float = Field(default=0.2, ge=0, le=1)
    order_qty: float = Field(default=1, gt=0, le=1_000_000)
    allow_short: bool = False

    @model_validator(mode="after")
    def _broker_can_honour(self) -> NaiveFlowTrendConfig:
        # Refused when saved, not at the first live short: Alpaca takes at most 9 decimals and
        # no fractional short, and the backfill's simulated broker refuses the same orders.
        problem = qty_problem(self.order_qty, short=self.allow_short)
        if problem is not None:
            hint = " (allow_short needs whole shares)" if self.allow_short else ""
            raise ValueError(f"order_qty: {problem}{hint}")
        return self

    @property
    def bars_needed(self) -> int:
        return self.sma_window

    @property
    def flow_minutes(self) -> int:
        return self.flow_lookback_minutes


def trend_code(close: ArrayLike, sma: ArrayLike, band_bps: float) -> NDArray[np.int8]:
    """UP if close > sma*(1+band), DOWN if close < sma*(1-band), else FLAT."""
    import numpy as np

    c = np.asarray(close, dtype=np.float64)
    s = np.asarray(sma, dtype=np.float64)
    band = band_bps / 10_000.0
    out = np.where(c > s * (1.0 + band), UP, np.where(c < s * (1.0 - band), DOWN, FLAT))
    return out.astype(np.int8)


def flow_ratio(bull_cents: ArrayLike, bear_cents: ArrayLike) -> NDArray[np.float64]:
    """net / (bull + bear), 0 where there is no flow."""
    import numpy as np

    bull = np.asarray(bull_cents, dtype=np.int64)
    bear = np.asarray(bear_cents, dtype=np.int64)
    total = bull + bear
    net = (bull - bear).astype(np.float64)
    safe = np.where(total > 0, total, 1).astype(np.float64)
    return np.where(total > 0, net / safe, 0.0)


def flow_code(
    bull_cents: ArrayLike, bear_cents: ArrayLike, min_premium: float, min_ratio: float
) -> NDArray[np.int8]:
    """BULLISH if net >= min premium and ratio >= min ratio; BEARISH mirrored; else NEUTRAL."""
    import numpy as np

    bull = np.asarray(bull_cents, dtype=np.int64)
    bear = np.asarray(bear_cents, dtype=np.int64)
    net = bull - bear
    ratio = flow_ratio(bull, bear)
    min_cents = round(min_premium * 100.0)  # whole cents: 0.07 * 100 is 7.000000000000001
    out = np.where(
        (net >= min_cents) & (ratio >= min_ratio),
        BULLISH,
        np.where((net <= -min_cents) & (ratio <= -min_ratio), BEARISH, NEUTRAL),
    )
    return out.astype(np.int8)


# One minute of one symbol, in plain Python floats: the same IEEE operations as the array
# forms above (ints below 2**53 convert exactly, so int/int division rounds alike), a tenth of
# their cost on a scalar. tests/test_strategy.py holds the two forms equal under hypothesis.
def ratio_of(bull_cents: int, bear_cents: int) -> float:
    total = bull_cents + bear_cents
    return (bull_cents - bear_cents) / total if total > 0 else 0.0


def trend_of(close: float, sma: float, band_bps: float) -> int:
    band = band_bps / 10_000.0
    if close > sma * (1.0 + band):
        return UP
    return DOWN if close < sma * (1.0 - band) else FLAT


def flow_of(bull_cents: int, bear_cents: int, min_premium: float, min_ratio: float) -> int:
    net, ratio = bull_cents - bear_cents, ratio_of(bull_cents, bear_cents)
    min_cents = round(min_premium * 100.0)
    if net >= min_cents and ratio >= min_ratio:
        return BULLISH
    return BEARISH if net <= -min_cents and ratio <= -min_ratio else NEUTRAL


def decide_position(
    trend: int, flow: int, position_qty: float, enough_bars: bool, cfg: NaiveFlowTrendConfig
) -> tuple[Action, float, str]:
    """The decision table of docs/architecture.md, "Naive Flow + Trend", rows checked in order."""
    if not enough_bars:
        return Action.HOLD, 0.0, "insufficient_bars"
    if position_qty == 0:
        if trend == UP and flow == BULLISH:
            return Action.BUY, cfg.order_qty, "entry_long"
        if cfg.allow_short and trend == DOWN and flow == BEARISH:
            return Action.SELL, cfg.order_qty, "entry_short"
        return Action.HOLD, 0.0, "no_entry"
    if position_qty > 0:
        if trend == DOWN or flow == BEARISH:
            return Action.SELL, position_qty, "exit_long"
        return Action.HOLD, 0.0, "hold_position"
    if trend == UP or flow == BULLISH:
        return Action.BUY, abs(position_qty), "exit_short"
    return Action.HOLD, 0.0, "hold_position"


def naive_flow_trend(features: Features, position_qty: float, cfg: NaiveFlowTrendConfig) -> Signal:
    """Enter long on an up-trend confirmed by bullish flow; exit when either turns against it."""
    close, sma = features.close, features.sma
    enough = close is not None and sma is not None and features.bars >= cfg.sma_window
    trend = FLAT
    if close is not None and sma is not None and enough:
        trend = trend_of(close, sma, cfg.trend_band_bps)
    flow = flow_of(features.bull_cents, features.bear_cents, cfg.min_flow_premium, cfg.min_flow_ratio)
    action, qty, reason = decide_position(trend, flow, position_qty, enough, cfg)
    payload: dict[str, Any] = {
        "close": features.close,
        "sma": features.sma,
        "trend": TREND_NAMES[trend] if enough else None,
        "flow": FLOW_NAMES[flow],
        "bull": features.bull_cents / 100,
        "bear": features.bear_cents / 100,
        "net": (features.bull_cents - features.bear_cents) / 100,
        "ratio": ratio_of(features.bull_cents, features.bear_cents),
        "position_qty": position_qty,
        "bars": features.bars,
        "ignored_bars": features.ignored_bars,
        "ignored_flow": features.ignored_flow,
        "series_break": features.series_break,
    }
    return Signal(features.symbol, action, qty, reason, payload)
