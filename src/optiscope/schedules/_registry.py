"""Schedules by name, for config files and the command line."""

from __future__ import annotations

from typing import Any

from optiscope._internal.registry import check_keywords, lookup
from optiscope.schedules._base import Constant, Schedule
from optiscope.schedules._classic import (
    CosineAnnealingScheduler,
    Decay,
    ExponentialDecay,
    MultiStepDecay,
    PolynomialDecay,
    StepDecay,
)
from optiscope.schedules._compose import Join
from optiscope.schedules._cyclic import CyclicLR, OneCycle
from optiscope.schedules._transformer import InverseSqrt, InverseSqrtDecay, WarmupStableDecay
from optiscope.schedules._warm_restarts import CosineAnnealingWarmRestarts
from optiscope.schedules._warmup import LinearWarmup, WarmupCosineSchedule

__all__ = ["SCHEDULES", "get_schedule", "registry_name"]

#: Every schedule by its snake_case name.
SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "step_decay": StepDecay,
    "exponential": ExponentialDecay,
    "cosine": CosineAnnealingScheduler,
    "cosine_warm_restarts": CosineAnnealingWarmRestarts,
    "multistep": MultiStepDecay,
    "polynomial": PolynomialDecay,
    "linear_warmup": LinearWarmup,
    "warmup_cosine": WarmupCosineSchedule,
    "one_cycle": OneCycle,
    "cyclic": CyclicLR,
    "inverse_sqrt": InverseSqrt,
    "inverse_sqrt_decay": InverseSqrtDecay,
    "wsd": WarmupStableDecay,
    "decay": Decay,
    "join": Join,
}


def registry_name(cls: type[Schedule]) -> str:
    """The registry name of a schedule class (its class name if it is not registered)."""
    for name, c in SCHEDULES.items():
        if c is cls:
            return name
    return cls.__name__


def get_schedule(name: str, **params: Any) -> Schedule:
    """Build a schedule from its registry name and keyword parameters.

    Nested schedules (``after`` of ``linear_warmup``, ``schedules`` of ``join``) may be
    given as dicts ``{"name": ..., **params}``, so the output of
    :meth:`Schedule.config` round-trips: ``get_schedule(**s.config()) == s``.

    Args:
        name: A key of :data:`SCHEDULES`, e.g. ``"cosine"``, ``"warmup_cosine"``, ``"wsd"``;
            case and surrounding spaces are ignored.
        **params: Constructor parameters of that schedule.

    Returns:
        The schedule.

    Raises:
        ValueError: Unknown name (the message suggests the nearest and lists the known
            ones), or a value out of range.
        TypeError: ``name`` is not a string, a keyword the schedule does not take (the
            message lists the allowed ones), or a parameter of the wrong type.

    Example:
        >>> get_schedule("cosine", initial_lr=0.1, T_max=10)(5)
        0.05
    """
    cls = lookup(SCHEDULES, name, "schedule")
    check_keywords(cls, params, f"schedule {registry_name(cls)!r}")
    return cls(**{k: _build_nested(v) for k, v in params.items()})


def _build_nested(value: Any) -> Any:
    if isinstance(value, dict) and "name" in value:
        inner = dict(value)
        return get_schedule(inner.pop("name"), **inner)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and "name" in v for v in value)
    ):
        return [_build_nested(v) for v in value]
    return value
