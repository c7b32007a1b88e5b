"""Argument checks for the whole project: one rule, one place.

Every public function and class checks its arguments where it receives them (at
construction for objects), so a typo in a config fails before any training. The rule:

* the wrong kind of value (a string for a number, a float for a count, a bool anywhere
  a number is meant) raises ``TypeError``;
* a value of the right kind outside the allowed set raises ``ValueError``;

and both messages name the parameter and say what is allowed. Each check returns the
value normalised (a plain ``int``/``float``/``str``), so callers write
``self.max_norm = check_positive("max_norm", max_norm)``.

Example:
    >>> check_int("epochs", 3, low=1)
    3
    >>> check_positive("max_norm", 0)
    Traceback (most recent call last):
        ...
    ValueError: max_norm must be in (0, inf], got 0.0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_lr",
    "check_non_negative_int",
    "check_norm_type",
    "check_open_unit",
    "check_optional_int",
    "check_positive",
    "check_positive_int",
    "check_real",
    "check_seed",
    "check_step",
]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float | int:
    """``value`` as a plain int/float after checking it is a number in range.

    Integers stay ``int`` (so ``10`` and ``10.0`` keep the type the caller gave).
    ``low``/``high`` bound the range (closed unless ``low_open``/``high_open``); NaN is
    never allowed, infinities only with ``allow_inf``.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` counts as wrong).
        ValueError: ``value`` is NaN, infinite (unless allowed) or outside the range.
    """
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if low_open or low is None else "["
    right = "]" if high is None and allow_inf else (")" if high_open or high is None else "]")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value!r}")
    return value


def check_lr(name: str, value: Any) -> float | int:
    """A learning rate: a finite number ``>= 0``."""
    return check_real(name, value, low=0.0)


def check_positive(name: str, value: Any, *, allow_inf: bool = True) -> float:
    """A limit in ``(0, inf]`` (``(0, inf)`` when ``allow_inf`` is False), as a float."""
    value = check_real(name, value, allow_inf=True)
    if value <= 0 or (not allow_inf and math.isinf(value)):
        upper = "inf]" if allow_inf else "inf)"
        raise ValueError(f"{name} must be in (0, {upper}, got {float(value)!r}")
    return float(value)


def check_open_unit(name: str, value: Any) -> float:
    """A number strictly between 0 and 1, as a float."""
    return float(check_real(name, value, low=0.0, high=1.0, low_open=True, high_open=True))


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (numpy integers too, bools never) in ``[low, high]``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            allowed = f">= {low}"
        elif low is None:
            allowed = f"<= {high}"
        else:
            allowed = f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return value


def check_non_negative_int(name: str, value: Any) -> int:
    """An integer ``>= 0``."""
    return check_int(name, value, low=0)


def check_positive_int(name: str, value: Any) -> int:
    """An integer ``>= 1``."""
    return check_int(name, value, low=1)


def check_optional_int(name: str, value: Any, *, low: int | None = None) -> int | None:
    """``None``, or an integer ``>= low``."""
    if value is None:
        return None
    if not _is_int(value):
        allowed = "an integer or None" if low is None else f"an integer >= {low} or None"
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    return check_int(name, value, low=low)


def check_seed(value: Any, name: str = "seed") -> int | None:
    """A random seed: ``None`` (fresh entropy) or an integer ``>= 0``."""
    if value is not None and not _is_int(value):
        raise TypeError(f"{name} must be an integer >= 0 or None, got {type(value).__name__}")
    return check_optional_int(name, value, low=0)


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """One of a fixed set of strings (exact spelling)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {tuple(choices)}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_step(t: Any, name: str = "step") -> float:
    """A step or (fractional) epoch: a finite number ``>= 0``, returned as float."""
    if not _is_real(t):
        raise TypeError(f"{name} must be a real number, got {type(t).__name__} {t!r}")
    t = float(t)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {t!r}")
    return t


def check_norm_type(value: Any, name: str = "norm_type") -> float:
    """A p-norm order in ``(0, inf]``; the string ``"inf"`` is accepted as torch does."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"{name} must be a number in (0, inf] or 'inf', got {value!r}"
            ) from None
    return check_positive(name, value)
