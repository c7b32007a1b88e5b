"""Evaluating one chunk of grid points: the in-place walk and the vmap path.

Both compute ``theta + sum_i c_i d_i`` from the saved base weights for each point (no
cumulative steps, so no rounding drift) and return a ``(C, M, 2)`` float64 tensor of
(sum, count) pairs per metric that stays on the device. The model is called through the
:class:`~optiscope.batch_loss.BatchLoss`: ``evaluate(model, batch)`` in the walk,
``evaluate(model, batch, state=...)`` (``torch.func.functional_call``) under vmap.

First-layer algebra: when the model is a plain ``nn.Sequential`` starting with a
``Linear`` or ``Conv2d`` and the BatchLoss calls it as ``model(x)`` (one input tensor, no
keywords, the base class's ``evaluate``), the first layer is linear in its weights, so
``f(X; W0 + sum c_i U_i) = f(X; W0) + sum c_i f(X; U_i)`` (bias included) is computed
once per batch and only the rest of the network runs per point. It is not valid for a
:class:`~optiscope.batch_loss.FunctionLoss`, a model that computes its own loss from
several inputs, or any model with a custom ``forward``; there it is never used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from optiscope.batch_loss import BatchLoss, FunctionLoss
from optiscope.landscape._metrics import Scorer

__all__ = ["Setup", "Prepared", "first_layer_split", "prepare", "walk_chunk", "vmap_chunk"]


@dataclass
class Setup:
    """What every chunk needs: the perturbed parameters, their base values, directions."""

    model: nn.Module
    bl: BatchLoss
    names: list[str]
    params: list[torch.Tensor]
    base: list[torch.Tensor]
    dirs: list[list[torch.Tensor]]  # dirs[i][j]: direction i of parameter j
    stacked: dict[str, torch.Tensor]  # name -> (k + 1, *shape): the base, then directions
    scorer: Scorer | None = None
    first: nn.Module | None = None  # first affine layer handled algebraically
    rest: nn.Module | None = None


@dataclass(frozen=True)
class Prepared:
    """One batch, ready for the kernels."""

    batch: Any
    target: Any
    size: int
    pre: torch.Tensor | None  # (k + 1, *out): first layer at the base and each direction


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def first_layer_split(model: nn.Module, bl: BatchLoss, batch: Any):
    """``(first, rest)`` when first-layer algebra is valid for this model and loss, else None."""
    # Only a plain Sequential: a subclass may override forward, and hooks change outputs.
    if type(model) is not nn.Sequential or len(model) < 2 or _hooked(model):
        return None
    first = model[0]
    if type(first) not in (nn.Linear, nn.Conv2d) or _hooked(first):
        return None
    if isinstance(bl, FunctionLoss) or type(bl).evaluate is not BatchLoss.evaluate:
        return None
    args, kwargs, _ = bl.split(batch)
    if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return None
    # Keep the original indices so "2.weight" still names the same parameter in `rest`.
    rest = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(model) if i > 0))
    return first, rest


def _affine(first: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
    if isinstance(first, nn.Linear):
        return F.linear(x, w, b)
    return first._conv_forward(x, w, b)


def _prefix(s: Setup, x: torch.Tensor) -> torch.Tensor:
    """``stack(f(X; W0, b0), f(X; U_1, ub_1), ...)`` for the first affine layer."""
    w0, b0 = s.first.weight, s.first.bias
    idx = {n: j for j, n in enumerate(s.names)}
    parts = [_affine(s.first, x, w0, b0)]
    for d in s.dirs:
        dw = d[idx["0.weight"]] if "0.weight" in idx else torch.zeros_like(w0)
        db = d[idx["0.bias"]] if "0.bias" in idx and b0 is not None else None
        parts.append(_affine(s.first, x, dw, db))
    return torch.stack(parts)


def prepare(s: Setup, batch: Any, first_layer: bool) -> Prepared:
    """Split ``batch`` once and, with first-layer algebra, compute its prefix."""
    if not first_layer:
        return Prepared(batch, None, s.bl.size(batch), None)
    args, _, target = s.bl.split(batch)
    return Prepared(batch, target, s.bl.size(batch), _prefix(s, args[0]))


def _scalar(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"the loss must be a scalar tensor (mean reduction), got {got}")
    return loss


def _score_rest(s: Setup, p: Prepared, out: Any) -> torch.Tensor:
    """Metrics from the output of ``rest`` (first-layer algebra)."""
    return s.scorer(_scalar(s.bl.loss(out, p.target)), out, p.target, p.size)


def _kept(s: Setup, p: Prepared) -> list[int]:
    # With first-layer algebra the first layer's weights are never read, so skip them.
    return [j for j, n in enumerate(s.names) if p.pre is None or not n.startswith("0.")]


def walk_chunk(s: Setup, p: Prepared, coefs: np.ndarray) -> torch.Tensor:
    """Metrics ``(C, M, 2)`` point by point, weights set in place with foreach kernels."""
    keep = _kept(s, p)
    params, base = [s.params[j] for j in keep], [s.base[j] for j in keep]
    dirs = [[d[j] for j in keep] for d in s.dirs]
    hs = _walk_prefixes(p, coefs)
    rows = []
    for row, c in enumerate(coefs):
        if params:
            # From the base each time (not cumulative steps), so no rounding drift.
            torch._foreach_copy_(params, base)
            for i, ci in enumerate(c):
                if ci != 0.0:
                    torch._foreach_add_(params, dirs[i], alpha=float(ci))
        if hs is None:
            ev = s.bl.evaluate(s.model, p.batch)
            rows.append(s.scorer(ev.loss, ev.output, ev.target, ev.size))
        else:
            rows.append(_score_rest(s, p, s.rest(hs(row))))
    if params:
        torch._foreach_copy_(params, base)
    return torch.stack(rows)


def _walk_prefixes(p: Prepared, coefs: np.ndarray):
    """``row -> [1, c_row] @ pre``: one (1, k+1) @ (k+1, N*H) matmul per point."""
    if p.pre is None:
        return None
    # Reads each precomputed output once and writes h once (a clone plus k in-place adds
    # would make 2k + 2 passes).
    flat = p.pre.reshape(p.pre.shape[0], -1)
    c1 = torch.as_tensor(coefs, dtype=p.pre.dtype).to(p.pre.device, non_blocking=True)
    c1 = torch.cat([torch.ones_like(c1[:, :1]), c1], dim=1)
    return lambda row: torch.mm(c1[row : row + 1], flat).view(p.pre.shape[1:])


def _combine(stacked: torch.Tensor, coefs1: torch.Tensor) -> torch.Tensor:
    """``[1, c] @ [base; directions]`` for a chunk: ``(C, *shape)`` written once.

    Folding the base into the matmul (a column of ones) saves the broadcast copy and the
    extra pass an ``addmm`` with a broadcast bias makes; the chunk is memory-bound.
    """
    flat = torch.mm(coefs1, stacked.reshape(stacked.shape[0], -1))
    return flat.view(coefs1.shape[0], *stacked.shape[1:])


def vmap_chunk(s: Setup, p: Prepared, coefs: torch.Tensor) -> torch.Tensor:
    """Metrics ``(C, M, 2)`` for a chunk in one vmapped ``functional_call``."""
    n = len(coefs)
    if n == 1:
        # A one-row matmul takes another kernel (gemv) with other rounding: pad to two
        # rows, so a point's bits do not depend on how the grid was cut into chunks.
        coefs = torch.cat([coefs, coefs])
    # The perturbed weights (and, with first-layer algebra, the first layer's output) are
    # built for the whole chunk outside vmap, one matmul each: inside vmap a batched
    # tensordot, or a linear with shared input and batched weights, becomes one tiny
    # matmul per point, several times slower on the CPU.
    coefs1 = torch.cat([torch.ones_like(coefs[:, :1]), coefs], dim=1)
    names = [s.names[j] for j in _kept(s, p)]
    weights = {name: _combine(s.stacked[name], coefs1) for name in names}
    if p.pre is None:

        def point(w: dict[str, torch.Tensor]) -> torch.Tensor:
            ev = s.bl.evaluate(s.model, p.batch, state=w)
            return s.scorer(ev.loss, ev.output, ev.target, ev.size)

        return torch.func.vmap(point)(weights)[:n]

    def point_rest(w: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        return _score_rest(s, p, functional_call(s.rest, w, (h,), strict=False))

    return torch.func.vmap(point_rest)(weights, _combine(p.pre, coefs1))[:n]
