"""Schedules by name, for config files and the command line."""

from __future__ import annotations

import inspect
from typing import Any

from optiscope.schedules._base import Constant, Schedule
from optiscope.schedules._classic import (
    CosineAnnealingScheduler,
    ExponentialDecay,
    MultiStepDecay,
    PolynomialDecay,
    StepDecay,
)
from optiscope.schedules._compose import Join
from optiscope.schedules._cyclic import CyclicLR, OneCycle
from optiscope.schedules._transformer import Decay, InverseSqrt, InverseSqrtDecay, WarmupStableDecay
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
        name: A key of :data:`SCHEDULES`, e.g. ``"cosine"``, ``"warmup_cosine"``, ``"wsd"``.
        **params: Constructor parameters of that schedule.

    Returns:
        The schedule.

    Raises:
        ValueError: Unknown name (the message lists the known ones), unknown parameter
            (the message lists the allowed ones), or a value out of range.
        TypeError: A parameter has the wrong type.

    Example:
        >>> get_schedule("cosine", initial_lr=0.1, T_max=10)(5)
        0.05
    """
    if not isinstance(name, str):
        raise TypeError(f"schedule name must be a string, got {name!r}")
    cls = SCHEDULES.get(name)
    if cls is None:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}")
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in allowed:
            raise ValueError(
                f"unknown parameter {key!r} for schedule {name!r}; allowed: {', '.join(allowed)}"
            )
    built = {k: _build_nested(v) for k, v in params.items()}
    return cls(**built)


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
