"""Choices made by measuring on the first batch: chunk size, path, first-layer algebra.

Under torch.distributed every rank measures and the slowest timings are all-reduced, so
all ranks make the same choice (a split decision would deadlock the collectives).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope.landscape._kernels import Setup, vmap_chunk, walk_chunk

__all__ = ["chunk_size_for", "choose_method", "CANDIDATES"]

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
    """Grid points per vmap call: the memory budget over an estimate of one point's."""
    per_point = 4 * (2 * _activation_elems(s.model, x) + sum(p.numel() for p in s.params) * 2)
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 4
    else:
        budget = _CPU_BUDGET
    return int(max(1, min(4096, budget // max(per_point, 1))))


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


# Candidate ways to evaluate a chunk, in order of preference when there is nothing to
# measure: the plain walk is the simplest and never fails.
CANDIDATES = ("walk", "walk_fl", "vmap")
_VMAP_MARGIN = 1.15
_FLOP_BOUND_S = 1e-3  # seconds per walk point above which the vmap probe is kept small


def choose_method(
    s: Setup,
    x: Any,
    y: Any,
    coefs: np.ndarray,
    pre: torch.Tensor | None,
    chunk: int,
    device: torch.device,
    group: Any,
    allowed: tuple[str, ...],
) -> tuple[str, torch.Tensor | None]:
    """Time the allowed ways on a few points of the first batch and keep the fastest.

    ``"walk_fl"`` is the walk with first-layer algebra: it skips a matmul per point but
    adds ``k + 2`` memory passes over the first layer's output, so whether it pays
    depends on the layer's width and the machine. Each way is timed twice, interleaved,
    and its best time kept (robust to a busy machine); all ranks agree on the pick.

    Returns:
        The choice and the winner's values for the first points it already computed
        (the probe is real work, not thrown away), or None.
    """
    allowed = tuple(c for c in CANDIDATES if c in allowed)
    if len(allowed) == 1 or (len(coefs) < 8 and group is None):
        # Nothing to choose, or too few points to amortise a measurement. (Under
        # torch.distributed every rank measures, or the all_reduce would hang.)
        return allowed[0], None
    k = min(len(coefs), max(4, min(chunk, 16)))
    kw = max(1, min(k // 4, 2))
    probe_t = torch.as_tensor(coefs[:k], dtype=s.base[0].dtype, device=device)
    best = dict.fromkeys(allowed, float("inf"))
    vals: dict[str, torch.Tensor] = {}
    kv = k  # points in the vmap probe; cut down below once a walk point's cost is known
    runs = {
        "vmap": lambda: vmap_chunk(s, x, y, probe_t[:kv], pre),
        "walk": lambda: walk_chunk(s, x, y, coefs[:kw], None),
        "walk_fl": lambda: walk_chunk(s, x, y, coefs[:kw], pre),
    }
    if "vmap" in allowed:
        try:
            vmap_chunk(s, x, y, probe_t[:1], pre)  # the first call pays for set-up
        except (RuntimeError, NotImplementedError, TypeError):
            # Some ops (data-dependent control flow, .item() in a loss) cannot be vmapped.
            allowed = tuple(c for c in allowed if c != "vmap")
            best.pop("vmap")
    for rep in range(2):
        for name in allowed:
            if name == "vmap" and rep == 0:
                # The walks ran first. When one of their points already costs milliseconds
                # the model is FLOP-bound, vmap has little launch overhead to save, and
                # its probe is mostly thrown away: keep it to a few points.
                walk = min((best[w] for w in ("walk", "walk_fl") if w in best), default=0.0)
                kv = min(k, 4) if walk > _FLOP_BOUND_S else k
            t0 = time.perf_counter()
            vals[name] = runs[name]()
            per_point = _since(t0, device) / (kv if name == "vmap" else kw)
            best[name] = min(best[name], per_point)
        # A clear winner after one round (3x faster than every other way) needs no second.
        ranked = sorted(best.values())
        if rep == 0 and group is None and len(ranked) > 1 and 3 * ranked[0] < ranked[1]:
            break
    times = _agree([best.get(c, float("inf")) for c in CANDIDATES], device, group)
    # The probe is a handful of points, so near-ties are noise; vmap must win clearly
    # (it holds a whole chunk of weights and activations), else the plain walk stays.
    times = [t * (_VMAP_MARGIN if c == "vmap" else 1.0) for c, t in zip(CANDIDATES, times)]
    pick = CANDIDATES[int(np.argmin(times))]
    return pick, vals.get(pick)


def _since(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0
