"""Batched evaluation of a model at many points ``theta + sum_i c_i d_i``.

The loop is turned inside out: one pass over the data, and for each batch every grid
point (in chunks). Two ways to evaluate a chunk:

* ``"vmap"``: ``torch.func.functional_call`` under ``torch.func.vmap``, one batched
  forward for the whole chunk. Wins for small models, where launch overhead dominates.
* ``"walk"``: set the parameters in place (foreach kernels) and run the plain forward
  point after point. Wins for large models, where the FLOPs dominate, and is the only
  way for train-mode evaluation (BatchNorm statistics updates, dropout draws).

``"auto"`` measures both on the first batch and keeps the faster. When the model is an
``nn.Sequential`` starting with a ``Linear`` or ``Conv2d``, the first layer is linear in
its weights, so ``f(X; W0 + sum c_i U_i) = f(X; W0) + sum c_i f(X; U_i)`` (bias included)
is computed once per batch, and only the rest of the network is run per point.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optiscope._internal.batches import batch_size, iter_batches
from optiscope._internal.restore import preserved

__all__ = ["evaluate_points", "resolve_metrics", "check_directions", "METHODS"]

METHODS = ("auto", "vmap", "walk")
Metric = Callable[[torch.Tensor, Any], torch.Tensor]
# Memory a chunk may use on the CPU: larger chunks spill out of the caches and run slower
# (measured on the digits MLP), so stay near cache size. On CUDA a quarter of free memory.
_CPU_BUDGET = 32 * 2**20


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


@dataclass
class _Setup:
    """What every chunk needs: the perturbed parameters, their base values, directions."""

    model: nn.Module
    names: list[str]
    params: list[torch.Tensor]
    base: list[torch.Tensor]
    dirs: list[list[torch.Tensor]]  # dirs[i][j]: direction i of parameter j
    stacked: dict[str, torch.Tensor]  # name -> (k, *shape)
    metrics: dict[str, Metric]
    first: nn.Module | None  # first affine layer handled algebraically
    rest: nn.Module | None


def _first_layer_split(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
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


def _affine(first: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
    if isinstance(first, nn.Linear):
        return F.linear(x, w, b)
    return first._conv_forward(x, w, b)


def _prefix(s: _Setup, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(f(X; W0, b0), stack_i f(X; U_i, ub_i))`` for the first affine layer."""
    if s.first is None:
        return None
    w0, b0 = s.first.weight, s.first.bias
    idx = {n: j for j, n in enumerate(s.names)}
    parts = []
    for i in range(len(s.dirs)):
        dw = s.dirs[i][idx["0.weight"]] if "0.weight" in idx else torch.zeros_like(w0)
        db = s.dirs[i][idx["0.bias"]] if "0.bias" in idx and b0 is not None else None
        parts.append(_affine(s.first, x, dw, db))
    return _affine(s.first, x, w0, b0), torch.stack(parts)


def _stack_metrics(s: _Setup, out: torch.Tensor, y: Any) -> torch.Tensor:
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


def _walk_chunk(s: _Setup, x: Any, y: Any, coefs: np.ndarray, pre) -> torch.Tensor:
    # With first-layer algebra the first layer's weights are never read, so skip them.
    keep = [j for j, n in enumerate(s.names) if pre is None or not n.startswith("0.")]
    params, base = [s.params[j] for j in keep], [s.base[j] for j in keep]
    dirs = [[d[j] for j in keep] for d in s.dirs]
    rows = []
    for c in coefs:
        if params:
            # From the base each time (not cumulative steps), so no rounding drift.
            torch._foreach_copy_(params, base)
            for i, ci in enumerate(c):
                if ci != 0.0:
                    torch._foreach_add_(params, dirs[i], alpha=float(ci))
        if pre is None:
            out = s.model(x)
        else:
            h = pre[0].clone()
            for i, ci in enumerate(c):
                if ci != 0.0:
                    h.add_(pre[1][i], alpha=float(ci))
            out = s.rest(h)
        rows.append(_stack_metrics(s, out, y))
    if params:
        torch._foreach_copy_(params, base)
    return torch.stack(rows)


def _combine(base: torch.Tensor, stacked: torch.Tensor, coefs: torch.Tensor) -> torch.Tensor:
    """``base + coefs @ stacked`` for a chunk: ``(C, *base.shape)`` in one addmm."""
    k = stacked.shape[0]
    flat = torch.addmm(base.reshape(1, -1), coefs, stacked.reshape(k, -1))
    return flat.view(coefs.shape[0], *base.shape)


def _vmap_chunk(s: _Setup, x: Any, y: Any, coefs: torch.Tensor, pre) -> torch.Tensor:
    # The perturbed weights (and, with first-layer algebra, the first layer's output) are
    # built for the whole chunk outside vmap, one matmul each: inside vmap a batched
    # tensordot, or a linear with shared input and batched weights, becomes one tiny
    # matmul per point, several times slower on the CPU.
    module = s.model if pre is None else s.rest
    params = {
        n: _combine(b, s.stacked[n], coefs)
        for n, b in zip(s.names, s.base)
        if pre is None or not n.startswith("0.")
    }

    def point(p: dict[str, torch.Tensor], inp: Any) -> torch.Tensor:
        out = torch.func.functional_call(module, p, (inp,), strict=False)
        return _stack_metrics(s, out, y)

    if pre is None:
        return torch.func.vmap(point, in_dims=(0, None))(params, x)
    return torch.func.vmap(point, in_dims=(0, 0))(params, _combine(pre[0], pre[1], coefs))


def _activation_elems(model: nn.Module, x: Any) -> int:
    """Elements of all module outputs in one forward: the memory a point costs."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _chunk_size(s: _Setup, x: Any, device: torch.device) -> int:
    per_point = 4 * (2 * _activation_elems(s.model, x) + sum(p.numel() for p in s.params) * 2)
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 4
    else:
        budget = _CPU_BUDGET
    return int(max(1, min(4096, budget // max(per_point, 1))))


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _agree(times: list[float], device: torch.device, group: Any) -> list[float]:
    """The slowest rank's timings, so every rank makes the same choice."""
    if group is None:
        return times
    import torch.distributed as dist

    t = torch.nan_to_num(torch.tensor(times, dtype=torch.float64), posinf=1e300)
    if dist.get_backend(group) == "nccl":
        t = t.to(device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return [float(v) for v in t.cpu()]


def _first_layer_pays(s: _Setup, x: torch.Tensor, device: torch.device, group: Any) -> bool:
    """Whether combining precomputed outputs beats recomputing the first layer.

    The combination is memory-bound ((k + 2) passes over the layer output) and the layer a
    matmul, so it pays for wide inputs (big in_features or conv kernels) and not for
    narrow ones; which side of the line a model is on depends on the machine, so measure.
    """
    h0, hd = _prefix(s, x)
    w, b = s.first.weight, s.first.bias

    def direct() -> None:
        _affine(s.first, x, w, b)

    def combine() -> None:
        h = h0.clone()
        for i in range(hd.shape[0]):
            h.add_(hd[i], alpha=0.5)

    t_direct = min(_timed(direct, device) for _ in range(5))
    t_combine = min(_timed(combine, device) for _ in range(5))
    t_direct, t_combine = _agree([t_direct, t_combine], device, group)
    return t_combine < 0.8 * t_direct


def _choose(s, x, y, coefs, pre, pre_walk, chunk, device, group) -> tuple[str, torch.Tensor | None]:
    """Time both paths on a few points of the first batch; all ranks agree on the pick.

    Returns the method and the winner's values for the first points it already computed
    (the probe is real work, not thrown away).
    """
    if len(coefs) < 8 and group is None:
        # Too few points to amortise a measurement (or vmap's set-up): the plain walk.
        # (Under torch.distributed every rank measures, or the all_reduce would hang.)
        return "walk", None
    k = min(len(coefs), max(4, min(chunk, 16)))
    probe = coefs[:k]
    probe_t = torch.as_tensor(probe, dtype=s.base[0].dtype, device=device)
    vals_vmap = None
    try:
        _vmap_chunk(s, x, y, probe_t[:1], pre)  # first call pays for tracing set-up
        t0 = time.perf_counter()
        vals_vmap = _vmap_chunk(s, x, y, probe_t, pre)
        t_vmap = _since(t0, device) / k
    except (RuntimeError, NotImplementedError, TypeError):
        # Some ops (data-dependent control flow, .item() in a loss) cannot be vmapped.
        t_vmap = float("inf")
    kw = max(1, k // 4)
    t0 = time.perf_counter()
    vals_walk = _walk_chunk(s, x, y, probe[:kw], pre_walk)
    t_walk = _since(t0, device) / kw
    t_vmap, t_walk = _agree([t_vmap, t_walk], device, group)
    return ("vmap", vals_vmap) if t_vmap < t_walk else ("walk", vals_walk)


def _since(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


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

    split = _first_layer_split(model) if first_layer in (None, True) else None
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
            n: torch.stack([dirs[i][j] for i in range(len(dirs))]) for j, n in enumerate(names)
        }
        s = _Setup(model, names, params, base, dirs, stacked, mfns, None, None)
        if split is not None:
            s.first, s.rest = split
        total, walk_fl = 0, None
        for x, y in iter_batches(data, targets, max_batches=max_batches, device=device):
            n = batch_size(x)
            pre = _prefix(s, x) if s.first is not None else None
            if walk_fl is None:
                # vmap always takes the algebra when the model allows it (it replaces vmap's
                # slowest case, shared inputs with batched weights); the walk only where
                # it measures faster than recomputing the layer.
                walk_fl = s.first is not None and (
                    first_layer is True
                    or (method != "vmap" and not train and _first_layer_pays(s, x, device, group))
                    or (train and _first_layer_pays(s, x, device, group))
                )
            if info["chunk_size"] is None:
                info["chunk_size"] = _chunk_size(s, x, device)
            chunk = info["chunk_size"]
            done = 0
            if info["method"] is None:
                if train or method != "auto":
                    info["method"] = "walk" if train else method
                else:
                    info["method"], first_vals = _choose(
                        s, x, y, coefs, pre, pre if walk_fl else None, chunk, device, group
                    )
                    if first_vals is not None:
                        done = len(first_vals)
                        values[:done] += first_vals.to(torch.float64) * n
            if bar is None and progress is not False:
                bar = _progress(data, max_batches, len(coefs), progress)
                bar.update(done)
            for start in range(done, len(coefs), chunk):
                block = coefs[start : start + chunk]
                if info["method"] == "vmap":
                    ct = torch.as_tensor(block, dtype=base[0].dtype, device=device)
                    vals = _vmap_chunk(s, x, y, ct, pre)
                else:
                    vals = _walk_chunk(s, x, y, block, pre if walk_fl else None)
                values[start : start + len(block)] += vals.to(torch.float64) * n
                if bar is not None:
                    bar.update(len(block))
            total += n
            info["batches"] += 1
            info["first_layer"] = s.first is not None and (
                info["method"] == "vmap" or bool(walk_fl)
            )
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
