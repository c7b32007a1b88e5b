"""Batched evaluation of a model at many points ``theta + sum_i c_i d_i``.

The loop is turned inside out: one pass over the data, and for each batch every grid
point (in chunks). Two ways to evaluate a chunk:

* ``"vmap"``: ``torch.func.functional_call`` under ``torch.func.vmap``, one batched
  forward for the whole chunk. Wins for small models, where launch overhead dominates.
* ``"walk"``: set the parameters in place (foreach kernels) and run the plain forward
  point after point. Wins for large models, where the FLOPs dominate, and is the only
  way for train-mode evaluation (BatchNorm statistics updates, dropout draws).

When the model is an ``nn.Sequential`` starting with a ``Linear`` or ``Conv2d``, the
first layer is linear in its weights, so ``f(X; W0 + sum c_i U_i) = f(X; W0) +
sum c_i f(X; U_i)`` (bias included) is computed once per batch and only the rest of the
network runs per point. ``"auto"`` times vmap, the walk and the walk with this algebra
end to end on a few points of the first batch and keeps the fastest (the measured
points are kept, not recomputed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.batches import batch_size, iter_batches
from optiscope._internal.restore import preserved
from optiscope.landscape._choice import choose_method, chunk_size_for
from optiscope.landscape._kernels import Setup, first_layer_split, prefix, vmap_chunk, walk_chunk
from optiscope.landscape._metrics import Metric, check_directions, resolve_metrics

__all__ = ["evaluate_points", "METHODS"]

METHODS = ("auto", "vmap", "walk")
_WALK_POINTS = 64  # grid points per walk_chunk call


def evaluate_points(
    model: nn.Module,
    loss_fn: Metric,
    data: Any,
    targets: Any,
    directions: Sequence[Mapping[str, torch.Tensor]],
    coefs: np.ndarray,
    *,
    metrics: Sequence[str | Metric] | Mapping[str, Metric] = ("loss",),
    method: str = "auto",
    first_layer: bool | None = None,
    chunk_size: int | None = None,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    train: bool = False,
    progress: bool | None = None,
    group: Any = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Metrics at ``theta + coefs[p] @ directions`` for every row ``p`` of ``coefs``.

    The model is restored bit-for-bit afterwards, also on error or Ctrl-C. Per batch, the
    metric is taken as the batch mean (a loss with ``reduction="mean"``); batches are
    combined weighted by their number of samples, so over a DataLoader the result is the
    mean over all samples. A ``reduction="sum"`` loss gives the per-sample mean of the
    per-batch sums (sum / batch size averaged), which equals the full-data sum only for a
    single batch.

    Returns:
        ``(values, info)``: ``values`` of shape ``(P, M)`` (float64, on the model's device),
        ``info`` with the method used, chunk size, samples and batches seen.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    coefs = np.asarray(coefs, dtype=np.float64)
    if coefs.ndim != 2 or coefs.shape[1] != len(directions):
        raise ValueError(f"coefs must have shape (P, {len(directions)}), got {coefs.shape}")
    if not np.all(np.isfinite(coefs)):
        raise ValueError("the grid coordinates must be finite")
    mfns = resolve_metrics(loss_fn, metrics)
    names = check_directions(model, directions)
    params_by_name = dict(model.named_parameters())
    if device is None:
        device = params_by_name[names[0]].device
    device = torch.device(device)
    if train and method == "vmap":
        raise ValueError("method='vmap' cannot evaluate in train mode; use 'walk' or 'auto'")

    split = first_layer_split(model) if first_layer in (None, True) else None
    if first_layer and split is None:
        raise ValueError("first_layer=True needs an nn.Sequential starting with Linear or Conv2d")

    values = torch.zeros((len(coefs), len(mfns)), dtype=torch.float64, device=device)
    info: dict[str, Any] = {
        "method": None,
        "first_layer": None,
        "chunk_size": chunk_size,
        "samples": 0,
        "batches": 0,
    }
    bar = None
    with preserved(model), torch.no_grad():
        model.train(train)
        params = [params_by_name[n] for n in names]
        for p in params:
            # Leaf tensors that require grad cannot take in-place foreach ops outside
            # no_grad; switching the flag off also keeps functional_call graph-free.
            p.requires_grad_(False)
        base = [p.detach().clone() for p in params]
        dirs = [
            [d.get(n, torch.zeros_like(p)).to(p.device, p.dtype) for n, p in zip(names, params)]
            for d in directions
        ]
        stacked = {
            n: torch.stack([base[j]] + [dirs[i][j] for i in range(len(dirs))])
            for j, n in enumerate(names)
        }
        s = Setup(model, names, params, base, dirs, stacked, mfns, None, None)
        if split is not None:
            s.first, s.rest = split
        if method == "vmap":
            allowed: tuple[str, ...] = ("vmap",)
        else:
            walks = {None: ("walk", "walk_fl"), True: ("walk_fl",), False: ("walk",)}
            allowed = walks[first_layer] if s.first is not None else ("walk",)
            if method == "auto" and not train:
                allowed += ("vmap",)
        choice, total = None, 0
        for x, y in iter_batches(data, targets, max_batches=max_batches, device=device):
            n = batch_size(x)
            pre = prefix(s, x) if s.first is not None else None
            if info["chunk_size"] is None:
                info["chunk_size"] = chunk_size_for(s, x, device)
            chunk = info["chunk_size"]
            done = 0
            if choice is None:
                choice, first_vals = choose_method(
                    s, x, y, coefs, pre, chunk, device, group, allowed
                )
                if first_vals is not None:
                    done = len(first_vals)
                    values[:done] += first_vals.to(torch.float64) * n
                info["method"] = "vmap" if choice == "vmap" else "walk"
                # vmap always takes the algebra when the model allows it: it replaces
                # vmap's slowest case, a shared input with batched weights.
                info["first_layer"] = s.first is not None and choice != "walk"
            if bar is None and progress is not False:
                bar = _progress(data, max_batches, len(coefs), progress)
                bar.update(done)
            # The memory-sized chunk is for vmap; the walk holds one point at a time, so
            # it takes longer runs (fewer per-chunk set-ups, progress still visible).
            step = chunk if choice == "vmap" else max(chunk, _WALK_POINTS)
            for start in range(done, len(coefs), step):
                block = coefs[start : start + step]
                if choice == "vmap":
                    ct = torch.as_tensor(block, dtype=base[0].dtype, device=device)
                    vals = vmap_chunk(s, x, y, ct, pre)
                else:
                    vals = walk_chunk(s, x, y, block, pre if choice == "walk_fl" else None)
                values[start : start + len(block)] += vals.to(torch.float64) * n
                if bar is not None:
                    bar.update(len(block))
            total += n
            info["batches"] += 1
        if bar is not None:
            bar.close()
    info["samples"] = total
    return values / total, info


def _progress(data: Any, max_batches: int | None, points: int, progress: bool | None):
    from tqdm.auto import tqdm

    n_batches = 1 if isinstance(data, torch.Tensor) else getattr(data, "__len__", lambda: None)()
    if n_batches is not None and max_batches is not None:
        n_batches = min(n_batches, max_batches)
    total = None if n_batches is None else n_batches * points
    # delay: the bar appears only for grids that take more than a moment.
    return tqdm(total=total, desc="landscape", unit="pt", delay=0 if progress else 1.0, leave=False)
