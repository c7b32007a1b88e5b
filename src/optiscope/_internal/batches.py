"""One way to walk "a tensor with targets, or a DataLoader" as (inputs, targets) batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

Batch = tuple[Any, Any]


def _to(x: Any, device: torch.device | str | None) -> Any:
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def batch_size(inputs: Any) -> int:
    """The number of samples in ``inputs`` (first dim of the first tensor found)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() > 0 else 1
    if isinstance(inputs, (list, tuple)) and inputs:
        return batch_size(inputs[0])
    if isinstance(inputs, dict) and inputs:
        return batch_size(next(iter(inputs.values())))
    raise TypeError(f"cannot tell the batch size of inputs of type {type(inputs).__name__}")


def iter_batches(
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    *,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """Yield ``(inputs, targets)`` pairs from a tensor pair or an iterable of batches.

    Args:
        data: A tensor of inputs (then ``targets`` is its labels, or None), or an iterable
            (DataLoader, list) whose items are ``(inputs, targets)`` pairs.
        targets: Labels for tensor ``data``; must be None when ``data`` is an iterable.
        max_batches: Stop after this many batches (None: all).
        device: Move each batch here.

    Raises:
        ValueError: Empty data, mismatched lengths, or ``max_batches < 1``.
        TypeError: ``targets`` given with a DataLoader, or batches that are not pairs.
    """
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise ValueError("data is empty: expected a tensor with at least one sample")
        if targets is not None and targets.shape[0] != data.shape[0]:
            raise ValueError(
                f"data and targets differ in length: {data.shape[0]} vs {targets.shape[0]}"
            )
        yield _to(data, device), _to(targets, device)
        return
    if targets is not None:
        raise TypeError("targets must be None when data is a DataLoader or iterable of batches")
    n = 0
    for item in data:
        if isinstance(item, dict) or not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(
                f"each batch must be an (inputs, targets) pair, got {type(item).__name__}"
            )
        yield _to(item[0], device), _to(item[1], device)
        n += 1
        if max_batches is not None and n >= max_batches:
            break
    if n == 0:
        raise ValueError("data is empty: the DataLoader yielded no batches")
