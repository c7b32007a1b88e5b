"""Argument checks shared by the clipping functions and clippers.

Every check raises at the call that receives the bad value (construction for clippers),
naming the parameter and the allowed range, so a typo in a config fails before training.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import nn


def real(name: str, value: object) -> float:
    """``value`` as a float, or TypeError when it is not a real number (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def positive(name: str, value: object, *, allow_inf: bool = True) -> float:
    """A limit in ``(0, inf]`` (or ``(0, inf)`` when ``allow_inf`` is False)."""
    value = real(name, value)
    if value <= 0 or (not allow_inf and math.isinf(value)):
        upper = "inf]" if allow_inf else "inf)"
        raise ValueError(f"{name} must be in (0, {upper}, got {value!r}")
    return value


def open_unit(name: str, value: object) -> float:
    """A number strictly between 0 and 1."""
    value = real(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return value


def non_negative_int(name: str, value: object) -> int:
    """An int ``>= 0`` (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def positive_int(name: str, value: object) -> int:
    """An int ``>= 1`` (bools excluded)."""
    value = non_negative_int(name, value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


def norm_type(value: object) -> float:
    """A p-norm order in ``(0, inf]``; the string ``"inf"`` is accepted like in torch."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"norm_type must be a number in (0, inf] or 'inf', got {value!r}"
            ) from None
    return positive("norm_type", value)


def as_tensor_list(parameters: object) -> list[torch.Tensor]:
    """``parameters`` (a tensor or an iterable of tensors) as a list of tensors."""
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    if isinstance(parameters, nn.Module):
        raise TypeError(
            "parameters must be a tensor or an iterable of tensors; pass model.parameters()"
        )
    if not isinstance(parameters, Iterable):
        kind = type(parameters).__name__
        raise TypeError(f"parameters must be a tensor or an iterable of tensors, got {kind}")
    params = list(parameters)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(
                f"parameters must contain only tensors, got an item of type {type(p).__name__}"
            )
    return params


def grads_of(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The gradients of ``params`` that exist (parameters without one are skipped)."""
    return [g for p in params if (g := p.grad) is not None]


def grads_from(parameters: object) -> list[torch.Tensor]:
    """``grads_of(as_tensor_list(parameters))`` in one pass over the parameters.

    Clipping runs every step, so the common case (an iterable of tensors) pays for a
    single read of each ``.grad``; the item-by-item type check runs only when that read
    fails, to name the offending item.
    """
    if isinstance(parameters, torch.Tensor) or isinstance(parameters, nn.Module):
        return grads_of(as_tensor_list(parameters))
    if not isinstance(parameters, Iterable):
        as_tensor_list(parameters)  # raises the TypeError naming the type
    params = parameters if isinstance(parameters, list) else list(parameters)
    try:
        return grads_of(params)
    except AttributeError:
        as_tensor_list(params)  # raises the TypeError naming the item's type
        raise
