"""The parameter-list helpers shared by the clipping functions and clippers.

Scalar arguments are checked with :mod:`optiscope._internal.checks`; here live only the
helpers that turn ``parameters`` (a tensor or an iterable of tensors) into the tensors
and gradients to clip, with a TypeError naming what was passed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


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
