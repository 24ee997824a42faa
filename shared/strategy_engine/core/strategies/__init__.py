"""Strategy registry keyed by `strategy_definitions.strategy_type`.

A strategy is a pure function (features, position, config) -> Signal plus the pydantic model
that validates its config. The engine and the backfill look strategies up here; nothing else
knows their names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from strategy_engine.core.errors import InputError
from strategy_engine.core.models import Features, Signal
from strategy_engine.core.strategies.base import StrategyConfig
from strategy_engine.core.strategies.naive_flow_trend import NaiveFlowTrendConfig, naive_flow_trend


@dataclass(frozen=True, slots=True)
class StrategySpec:
    strategy_type: str
    config_model: type[StrategyConfig]
    decide: Callable[[Features, float, Any], Signal]


REGISTRY: dict[str, StrategySpec] = {
    "naive_flow_trend": StrategySpec("naive_flow_trend", NaiveFlowTrendConfig, naive_flow_trend),
}


def get_spec(strategy_type: str) -> StrategySpec:
    try:
        return REGISTRY[strategy_type]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InputError(f"unknown strategy_type {strategy_type!r} (known: {known})") from None


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """One readable line naming every offending key, e.g. `config.sma_window: ...`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "value"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_config(strategy_type: str, raw: dict[str, Any] | None) -> StrategyConfig:
    """Validate a stored or submitted config; unknown keys and wrong types are refused."""
    spec = get_spec(strategy_type)
    try:
        return spec.config_model.model_validate(raw or {})
    except ValidationError as exc:
        raise InputError(f"invalid strategy config: {validation_message(exc, 'config.')}") from None


def config_dump(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


__all__ = ["REGISTRY", "StrategyConfig", "StrategySpec", "get_spec", "parse_config", "validation_message"]
