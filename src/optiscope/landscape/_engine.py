"""Batched evaluation of a model at many points ``theta + sum_i c_i d_i``.

The loop is turned inside out: one pass over the data, and for each batch every grid
point (in chunks). Two ways to evaluate a chunk (``_kernels``):

* ``"vmap"``: ``BatchLoss.evaluate(model, batch, state=...)`` under ``torch.func.vmap``,
  one batched forward for the whole chunk. Wins for small models, where launch overhead
  dominates.
* ``"walk"``: set the parameters in place (foreach kernels) and run the plain forward
  point after point. Wins for large models, where the FLOPs dominate, works for every
  model, and is the only way for train-mode evaluation (BatchNorm statistics updates,
  dropout draws).

``method="auto"`` picks one by a fixed rule on the model, the first batch and the device
(``_choice``), never by timing, so the same inputs give the same bits on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.batches import walk_batches
from optiscope._internal.restore import preserved
from optiscope.batch_loss import as_batch_loss
from optiscope.landscape._choice import METHODS, GridSettings, Plan, plan, probe
from optiscope.landscape._kernels import Setup, first_layer_split, prepare, vmap_chunk, walk_chunk
from optiscope.landscape._metrics import (
    Measure,
    Metric,
    bind_metrics,
    check_directions,
    resolve_metrics,
)

__all__ = ["evaluate_points", "GridSettings", "METHODS"]

_WALK_POINTS = 64  # grid points per walk_chunk call


def evaluate_points(
    model: nn.Module,
    loss_fn: Any,
    data: Any,
    targets: Any,
    directions: Sequence[Mapping[str, torch.Tensor]],
    coefs: np.ndarray,
    *,
    metrics: Sequence[str | Metric] | Mapping[str, Metric] = ("loss",),
    settings: GridSettings | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Metrics at ``theta + coefs[p] @ directions`` for every row ``p`` of ``coefs``.

    The model is restored bit-for-bit afterwards, also on error or Ctrl-C. Per batch the
    loss is the batch mean, weighted by :meth:`BatchLoss.size`, so over a DataLoader the
    result is the mean over all samples; accuracy is correct over scored labels.

    Args:
        model: The network.
        loss_fn: ``loss_fn(output, target)``, a :class:`~optiscope.batch_loss.BatchLoss`,
            or None (the model returns its loss).
        data: A tensor of inputs (with ``targets``) or an iterable of batches.
        targets: Labels for tensor ``data``.
        directions: ``k`` dicts of name -> tensor.
        coefs: ``(P, k)`` grid coordinates.
        metrics: As in :func:`~optiscope.landscape.line`.
        settings: How to evaluate (default :class:`GridSettings`).

    Returns:
        ``(values, info)``: ``values`` of shape ``(P, M)`` (float64, on the model's device),
        ``info`` with the method used, first-layer algebra, chunk size, samples, batches.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> X, y = torch.zeros(4, 2), torch.zeros(4, 1)
        >>> v, info = evaluate_points(m, nn.MSELoss(), X, y, [{"bias": torch.ones(1)}],
        ...                           np.zeros((3, 1)), settings=GridSettings(progress=False))
        >>> tuple(v.shape), info["method"]
        ((3, 1), 'vmap')
    """
    settings = GridSettings() if settings is None else settings
    coefs = _check_coefs(coefs, len(directions))
    bl = as_batch_loss(loss_fn)
    measures = resolve_metrics(metrics)
    names, directions = check_directions(model, directions)
    device = _device(model, names, settings.device)
    sums = torch.zeros((len(coefs), len(measures), 2), dtype=torch.float64, device=device)
    info: dict[str, Any] = {"samples": 0, "batches": 0}
    bar = None
    with preserved(model), torch.no_grad():
        s = _setup(model, bl, names, directions)
        p: Plan | None = None
        for batch in walk_batches(data, targets, max_batches=settings.max_batches, device=device):
            if p is None:
                p = _start(s, batch, measures, settings, device)
                info.update(method=p.method, first_layer=p.first_layer, chunk_size=p.chunk)
                bar = _progress(data, settings, len(coefs))
            sums += _run_batch(s, p, batch, coefs, bar, info)
        if bar is not None:
            bar.close()
    return sums[..., 0] / sums[..., 1], info


def _check_coefs(coefs: Any, k: int) -> np.ndarray:
    coefs = np.asarray(coefs, dtype=np.float64)
    if coefs.ndim != 2 or coefs.shape[1] != k:
        raise ValueError(f"coefs must have shape (P, {k}), got {coefs.shape}")
    if not np.all(np.isfinite(coefs)):
        raise ValueError("the grid coordinates must be finite")
    return coefs


def _device(model: nn.Module, names: list[str], device: Any) -> torch.device:
    if device is None:
        return dict(model.named_parameters())[names[0]].device
    return torch.device(device)


def _setup(model: nn.Module, bl: Any, names: list[str], directions: Sequence[Mapping]) -> Setup:
    """Base weights and directions, aligned by name (call inside ``preserved``)."""
    by_name = dict(model.named_parameters())
    params = [by_name[n] for n in names]
    for p in params:
        # Leaf tensors that require grad cannot take in-place foreach ops outside
        # no_grad; switching the flag off also keeps functional_call graph-free.
        p.requires_grad_(False)
    base = [p.detach().clone() for p in params]
    dirs = [
        [d.get(n, torch.zeros_like(p)).to(p.device, p.dtype) for n, p in zip(names, params)]
        for d in directions
    ]
    stacked = {n: torch.stack([base[j]] + [d[j] for d in dirs]) for j, n in enumerate(names)}
    return Setup(model, bl, names, params, base, dirs, stacked)


def _start(
    s: Setup, batch: Any, measures: list[Measure], settings: GridSettings, device: torch.device
) -> Plan:
    """Probe the first batch, bind the metrics, and apply the rule."""
    s.model.eval()
    pr = probe(s.model, s.bl, batch)
    s.scorer = bind_metrics(measures, s.bl, pr.output, pr.target)
    split = None if settings.first_layer is False else first_layer_split(s.model, s.bl, batch)
    s.first, s.rest = split if split is not None else (None, None)
    s.model.train(settings.train)
    perturbed = sum(p.numel() for p in s.params)
    return plan(
        s.model, pr, settings, first=s.first, perturbed=perturbed, k=len(s.dirs), device=device
    )


def _run_batch(
    s: Setup, p: Plan, batch: Any, coefs: np.ndarray, bar: Any, info: dict[str, Any]
) -> torch.Tensor:
    """``(P, M, 2)`` (sum, count) pairs of one batch over the whole grid."""
    prep = prepare(s, batch, p.first_layer)
    # The memory-sized chunk is for vmap; the walk holds one point at a time, so it takes
    # longer runs (fewer per-chunk set-ups, progress still visible).
    step = p.chunk if p.method == "vmap" else max(p.chunk, _WALK_POINTS)
    parts = []
    for start in range(0, len(coefs), step):
        block = coefs[start : start + step]
        if p.method == "vmap":
            ct = torch.as_tensor(block, dtype=s.base[0].dtype, device=s.base[0].device)
            parts.append(vmap_chunk(s, prep, ct))
        else:
            parts.append(walk_chunk(s, prep, block))
        if bar is not None:
            bar.update(len(block))
    info["samples"] += prep.size
    info["batches"] += 1
    return torch.cat(parts)


def _progress(data: Any, settings: GridSettings, points: int):
    if settings.progress is False:
        return None
    from tqdm.auto import tqdm

    n_batches = 1 if isinstance(data, torch.Tensor) else getattr(data, "__len__", lambda: None)()
    if n_batches is not None and settings.max_batches is not None:
        n_batches = min(n_batches, settings.max_batches)
    total = None if n_batches is None else n_batches * points
    # delay: the bar appears only for grids that take more than a moment.
    delay = 0 if settings.progress else 1.0
    return tqdm(total=total, desc="landscape", unit="pt", delay=delay, leave=False)
