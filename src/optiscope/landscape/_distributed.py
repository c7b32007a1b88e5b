"""Sharding a grid across the ranks of an initialised ``torch.distributed`` job.

Every rank passes the same model, data and directions; each evaluates a contiguous block
of grid points and the blocks are summed with ``all_reduce`` (zeros elsewhere, so the
sum is exact), so every rank returns the full result, equal to a single-process run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["active_group", "shard_bounds", "gather_points"]


def active_group(distributed: bool | None, group: Any = None) -> Any:
    """The process group to shard over, or None for a single-process evaluation.

    Raises:
        ValueError: ``distributed=True`` but torch.distributed is not initialised.
    """
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if distributed is True and not ready:
        raise ValueError("distributed=True but torch.distributed is not initialised")
    if distributed is False or not ready:
        return None
    if dist.get_world_size(group) < 2:
        return None
    return dist.group.WORLD if group is None else group


def shard_bounds(num_points: int, group: Any) -> tuple[int, int]:
    """``[start, stop)`` of this rank's block of ``num_points`` (near-equal blocks)."""
    if group is None:
        return 0, num_points
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    edges = np.linspace(0, num_points, world + 1).round().astype(int)
    return int(edges[rank]), int(edges[rank + 1])


def gather_points(local: torch.Tensor, start: int, num_points: int, group: Any) -> torch.Tensor:
    """Place this rank's ``(stop - start, M)`` block into the full ``(P, M)`` on every rank."""
    if group is None:
        return local
    import torch.distributed as dist

    device = local.device
    if dist.get_backend(group) == "gloo":
        device = torch.device("cpu")
    full = torch.zeros((num_points, local.shape[1]), dtype=local.dtype, device=device)
    full[start : start + local.shape[0]] = local.to(device)
    dist.all_reduce(full, group=group)
    return full
