"""Argument checks shared by every schedule: one clear error, raised at construction."""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float | int:
    """Return ``value`` as a plain int/float after checking it is a finite number in range.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` counts as wrong).
        ValueError: ``value`` is NaN, infinite or outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    allowed = f"{left}{lo}, {hi}{right}"
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    return value


def check_lr(name: str, value: Any) -> float | int:
    """A learning rate: finite and ``>= 0``."""
    return check_real(name, value, low=0.0)


def check_int(name: str, value: Any, *, low: int | None = None) -> int:
    """An integer (not bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_step(t: Any) -> float:
    """A step or (fractional) epoch: a finite real number ``>= 0``, returned as float."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"step must be a real number, got {type(t).__name__} {t!r}")
    t = float(t)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"step must be a finite number >= 0, got {t!r}")
    return t
