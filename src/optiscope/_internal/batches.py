"""One way to walk "a tensor with targets, or a DataLoader" batch by batch.

:func:`walk_batches` yields batches as they are (any layout a
:class:`~optiscope.batch_loss.BatchLoss` understands); :func:`iter_batches` is the older
``(inputs, targets)``-only walker, kept until every area has moved to ``walk_batches``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from optiscope.batch_loss import to_device

Batch = tuple[Any, Any]


_to = to_device


def walk_batches(
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    *,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Any]:
    """Yield the batches of a tensor pair or of an iterable of batches, moved to ``device``.

    Args:
        data: A tensor of inputs (one batch ``(data, targets)``, or ``(data,)`` without
            targets), or an iterable (DataLoader, list) of batches in any layout.
        targets: Labels for tensor ``data``; must be None when ``data`` is an iterable.
        max_batches: Stop after this many batches (None: all).
        device: Move each batch here.

    Raises:
        ValueError: Empty data, mismatched lengths, or ``max_batches < 1``.
        TypeError: ``targets`` given with an iterable, or ``data`` not iterable.

    Example:
        >>> import torch
        >>> [len(b) for b in walk_batches(torch.zeros(3, 2), torch.zeros(3))]
        [2]
        >>> list(walk_batches([{"x": 1}, {"x": 2}], max_batches=1))
        [{'x': 1}]
    """
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int)
    ):
        raise TypeError(f"max_batches must be an int or None, got {type(max_batches).__name__}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches!r}")
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise ValueError("data is empty: expected a tensor with at least one sample")
        if targets is not None and targets.shape[0] != data.shape[0]:
            raise ValueError(
                f"data and targets differ in length: {data.shape[0]} vs {targets.shape[0]}"
            )
        yield to_device((data,) if targets is None else (data, targets), device)
        return
    if targets is not None:
        raise TypeError("targets must be None when data is a DataLoader or iterable of batches")
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data must be a tensor or an iterable of batches, got {type(data).__name__}"
        )
    n = 0
    for item in data:
        yield to_device(item, device)
        n += 1
        if max_batches is not None and n >= max_batches:
            break
    if n == 0:
        raise ValueError("data is empty: the DataLoader yielded no batches")


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
