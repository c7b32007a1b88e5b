"""Metrics evaluated at each grid point, and the checks on user-given directions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Metric", "resolve_metrics", "check_directions"]

Metric = Callable[[torch.Tensor, Any], torch.Tensor]


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if outputs.dim() == 1 or outputs.shape[-1] == 1:
        # One logit per sample: binary classification thresholded at 0.
        pred = (outputs.reshape(targets.shape) > 0).to(targets.dtype)
        return (pred == targets).float().mean()
    if targets.shape == outputs.shape:  # one-hot or soft labels
        targets = targets.argmax(-1)
    return (outputs.argmax(-1) == targets).float().mean()


def resolve_metrics(
    loss_fn: Metric, metrics: Sequence[str | Metric] | Mapping[str, Metric]
) -> dict[str, Metric]:
    """Turn ``("loss", "accuracy", my_fn)`` or ``{"name": fn}`` into ``{name: fn}``."""
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    else:
        if isinstance(metrics, str) or callable(metrics):
            metrics = (metrics,)
        items = []
        for m in metrics:
            if isinstance(m, str):
                items.append((m, m))
            elif callable(m):
                items.append((getattr(m, "__name__", type(m).__name__), m))
            else:
                raise TypeError(f"a metric must be a name or a callable, got {type(m).__name__}")
    out: dict[str, Metric] = {}
    for name, m in items:
        if m == "loss":
            m = loss_fn
        elif m == "accuracy":
            m = _accuracy
        elif isinstance(m, str) or not callable(m):
            raise ValueError(
                f"unknown metric {m!r}: use 'loss', 'accuracy' or a callable(outputs, targets)"
            )
        if name in out:
            raise ValueError(f"metric name {name!r} given twice")
        out[str(name)] = m
    if not out:
        raise ValueError("metrics is empty: give at least one, e.g. ('loss',)")
    return out


def check_directions(
    model: nn.Module, directions: Sequence[Mapping[str, torch.Tensor]]
) -> list[str]:
    """Validate direction dicts against the model; return the names they touch, in order."""
    params = dict(model.named_parameters())
    touched: set[str] = set()
    for k, d in enumerate(directions):
        if not isinstance(d, Mapping):
            raise TypeError(
                f"direction {k + 1} must be a dict of name -> tensor, got {type(d).__name__}"
            )
        if not d:
            raise ValueError(f"direction {k + 1} is empty")
        for name, t in d.items():
            if name not in params:
                raise ValueError(
                    f"direction {k + 1} names {name!r}, which is not a parameter of the model; "
                    f"the parameter names are: {', '.join(params)}"
                )
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(params[name].shape):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(
                    f"direction {k + 1}[{name!r}] has shape {shape}, "
                    f"expected {tuple(params[name].shape)}"
                )
            if not t.is_floating_point():
                raise TypeError(f"direction {k + 1}[{name!r}] must be floating point")
        touched.update(d)
    return [n for n in params if n in touched]
