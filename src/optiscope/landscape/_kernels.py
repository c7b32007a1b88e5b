"""Evaluating one chunk of grid points: the in-place walk and the vmap path.

Both compute ``theta + sum_i c_i d_i`` from the saved base weights for each point (no
cumulative steps, so no rounding drift) and return a ``(C, M)`` tensor of metrics that
stays on the device.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optiscope.landscape._metrics import Metric

__all__ = ["Setup", "first_layer_split", "affine", "prefix", "walk_chunk", "vmap_chunk"]


@dataclass
class Setup:
    """What every chunk needs: the perturbed parameters, their base values, directions."""

    model: nn.Module
    names: list[str]
    params: list[torch.Tensor]
    base: list[torch.Tensor]
    dirs: list[list[torch.Tensor]]  # dirs[i][j]: direction i of parameter j
    stacked: dict[str, torch.Tensor]  # name -> (k + 1, *shape): the base, then directions
    metrics: dict[str, Metric]
    first: nn.Module | None  # first affine layer handled algebraically
    rest: nn.Module | None


def first_layer_split(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    # Only a plain Sequential: a subclass may override forward, and hooks change outputs.
    if type(model) is not nn.Sequential or len(model) < 2:
        return None
    first = model[0]
    if type(first) not in (nn.Linear, nn.Conv2d):
        return None
    if first._forward_hooks or first._forward_pre_hooks:
        return None
    # Keep the original indices so "2.weight" still names the same parameter in `rest`.
    rest = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(model) if i > 0))
    return first, rest


def affine(first: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
    if isinstance(first, nn.Linear):
        return F.linear(x, w, b)
    return first._conv_forward(x, w, b)


def prefix(s: Setup, x: torch.Tensor) -> torch.Tensor | None:
    """``stack(f(X; W0, b0), f(X; U_1, ub_1), ...)`` for the first affine layer."""
    if s.first is None:
        return None
    w0, b0 = s.first.weight, s.first.bias
    idx = {n: j for j, n in enumerate(s.names)}
    parts = [affine(s.first, x, w0, b0)]
    for i in range(len(s.dirs)):
        dw = s.dirs[i][idx["0.weight"]] if "0.weight" in idx else torch.zeros_like(w0)
        db = s.dirs[i][idx["0.bias"]] if "0.bias" in idx and b0 is not None else None
        parts.append(affine(s.first, x, dw, db))
    return torch.stack(parts)


def _stack_metrics(s: Setup, out: torch.Tensor, y: Any) -> torch.Tensor:
    vals = []
    for name, fn in s.metrics.items():
        v = fn(out, y)
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v, dtype=torch.float32, device=out.device)
        if v.dim() != 0:
            raise ValueError(
                f"metric {name!r} must return a scalar, got shape {tuple(v.shape)}; "
                "use a loss with reduction='mean' or 'sum'"
            )
        vals.append(v.to(torch.float32))
    return torch.stack(vals)


def walk_chunk(s: Setup, x: Any, y: Any, coefs: np.ndarray, pre) -> torch.Tensor:
    """Metrics ``(C, M)`` point by point, weights set in place with foreach kernels."""
    # With first-layer algebra the first layer's weights are never read, so skip them.
    keep = [j for j, n in enumerate(s.names) if pre is None or not n.startswith("0.")]
    params, base = [s.params[j] for j in keep], [s.base[j] for j in keep]
    dirs = [[d[j] for j in keep] for d in s.dirs]
    rows = []
    if pre is not None:
        # One (1, k+1) @ (k+1, N*H) matmul per point: reads each precomputed output once
        # and writes h once (a clone plus k in-place adds would make 2k + 2 passes).
        flat = pre.reshape(pre.shape[0], -1)
        c1 = torch.as_tensor(coefs, dtype=pre.dtype).to(pre.device, non_blocking=True)
        c1 = torch.cat([torch.ones_like(c1[:, :1]), c1], dim=1)
    for row, c in enumerate(coefs):
        if params:
            # From the base each time (not cumulative steps), so no rounding drift.
            torch._foreach_copy_(params, base)
            for i, ci in enumerate(c):
                if ci != 0.0:
                    torch._foreach_add_(params, dirs[i], alpha=float(ci))
        if pre is None:
            out = s.model(x)
        else:
            out = s.rest(torch.mm(c1[row : row + 1], flat).view(pre.shape[1:]))
        rows.append(_stack_metrics(s, out, y))
    if params:
        torch._foreach_copy_(params, base)
    return torch.stack(rows)


def _combine(stacked: torch.Tensor, coefs1: torch.Tensor) -> torch.Tensor:
    """``[1, c] @ [base; directions]`` for a chunk: ``(C, *shape)`` written once.

    Folding the base into the matmul (a column of ones) saves the broadcast copy and the
    extra pass an ``addmm`` with a broadcast bias makes; the chunk is memory-bound.
    """
    flat = torch.mm(coefs1, stacked.reshape(stacked.shape[0], -1))
    return flat.view(coefs1.shape[0], *stacked.shape[1:])


def vmap_chunk(s: Setup, x: Any, y: Any, coefs: torch.Tensor, pre) -> torch.Tensor:
    """Metrics ``(C, M)`` for a chunk in one vmapped ``functional_call``."""
    # The perturbed weights (and, with first-layer algebra, the first layer's output) are
    # built for the whole chunk outside vmap, one matmul each: inside vmap a batched
    # tensordot, or a linear with shared input and batched weights, becomes one tiny
    # matmul per point, several times slower on the CPU.
    module = s.model if pre is None else s.rest
    coefs1 = torch.cat([torch.ones_like(coefs[:, :1]), coefs], dim=1)
    params = {
        n: _combine(s.stacked[n], coefs1) for n in s.names if pre is None or not n.startswith("0.")
    }

    def point(p: dict[str, torch.Tensor], inp: Any) -> torch.Tensor:
        out = torch.func.functional_call(module, p, (inp,), strict=False)
        return _stack_metrics(s, out, y)

    if pre is None:
        return torch.func.vmap(point, in_dims=(0, None))(params, x)
    return torch.func.vmap(point, in_dims=(0, 0))(params, _combine(pre, coefs1))
