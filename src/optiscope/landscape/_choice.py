"""Choices made by measuring on the first batch: chunk size, path, first-layer algebra.

Under torch.distributed every rank measures and the slowest timings are all-reduced, so
all ranks make the same choice (a split decision would deadlock the collectives).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optiscope.landscape._kernels import Setup, affine, prefix, vmap_chunk, walk_chunk

__all__ = ["chunk_size_for", "first_layer_pays", "choose_method"]

# Memory a chunk may use on the CPU: the vmap path is memory-bound, and chunks that spill
# out of the caches run slower (measured on the guide's 2-10-1 network: 512 points per
# chunk beat both 128 and 2,601), so stay near cache size. On CUDA a quarter of free memory.
_CPU_BUDGET = 8 * 2**20


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


def chunk_size_for(s: Setup, x: Any, device: torch.device) -> int:
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


def first_layer_pays(s: Setup, x: torch.Tensor, device: torch.device, group: Any) -> bool:
    """Whether combining precomputed outputs beats recomputing the first layer.

    The combination is memory-bound ((k + 2) passes over the layer output) and the layer a
    matmul, so it pays for wide inputs (big in_features or conv kernels) and not for
    narrow ones; which side of the line a model is on depends on the machine, so measure.
    """
    pre = prefix(s, x)
    h0, hd = pre[0], pre[1:]
    w, b = s.first.weight, s.first.bias

    def direct() -> None:
        affine(s.first, x, w, b)

    def combine() -> None:
        h = h0.clone()
        for i in range(hd.shape[0]):
            h.add_(hd[i], alpha=0.5)

    t_direct = min(_timed(direct, device) for _ in range(5))
    t_combine = min(_timed(combine, device) for _ in range(5))
    t_direct, t_combine = _agree([t_direct, t_combine], device, group)
    return t_combine < 0.8 * t_direct


def choose_method(
    s, x, y, coefs, pre, pre_walk, chunk, device, group
) -> tuple[str, torch.Tensor | None]:
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
        vmap_chunk(s, x, y, probe_t[:1], pre)  # first call pays for tracing set-up
        t0 = time.perf_counter()
        vals_vmap = vmap_chunk(s, x, y, probe_t, pre)
        t_vmap = _since(t0, device) / k
    except (RuntimeError, NotImplementedError, TypeError):
        # Some ops (data-dependent control flow, .item() in a loss) cannot be vmapped.
        t_vmap = float("inf")
    kw = max(1, k // 4)
    t0 = time.perf_counter()
    vals_walk = walk_chunk(s, x, y, probe[:kw], pre_walk)
    t_walk = _since(t0, device) / kw
    t_vmap, t_walk = _agree([t_vmap, t_walk], device, group)
    return ("vmap", vals_vmap) if t_vmap < t_walk else ("walk", vals_walk)


def _since(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0
