"""The instruments' options: quantity names, noise sources and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.distributed as dist

from optiscope._internal.registry import nearest

__all__ = [
    "DEFAULT_QUANTITIES",
    "NOISE_SOURCES",
    "PROBED",
    "QUANTITIES",
    "check_quantities",
    "pick_noise_source",
    "world",
]

QUANTITIES = (
    "loss",
    "grad_norm",
    "layers",
    "distance",
    "noise_scale",
    "sharpness",
    "preconditioned_sharpness",
    "grad_tests",
)
DEFAULT_QUANTITIES = ("loss", "grad_norm", "layers", "distance")
NOISE_SOURCES = ("auto", "micro_batches", "ddp", "split")
PROBED = ("sharpness", "preconditioned_sharpness", "grad_tests")


def check_quantities(quantities: Any) -> tuple[str, ...]:
    if isinstance(quantities, str) or not isinstance(quantities, Sequence):
        raise TypeError(f"quantities must be a list of names from {QUANTITIES}, got {quantities!r}")
    out = []
    for q in quantities:
        if not isinstance(q, str):
            raise TypeError(f"quantities must hold strings, got {type(q).__name__} {q!r}")
        if q not in QUANTITIES:
            raise ValueError(
                f"unknown quantity {q!r} in quantities{nearest(q, list(QUANTITIES))}; "
                f"known: {', '.join(QUANTITIES)}"
            )
        out.append(q)
    if not out:
        raise ValueError(f"quantities must name at least one of {QUANTITIES}")
    return tuple(dict.fromkeys(out))


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_noise_source(
    source: str, wants: set[str], ddp: bool, probe: Any, accum: int | None, later: bool
) -> str | None:
    """The noise source to use (None without ``noise_scale``); raises when none fits."""
    if "noise_scale" not in wants:
        return None
    if source == "auto":
        if ddp:
            return "ddp"
        if accum is not None and accum > 1:
            return "micro_batches"
        if probe is not None or later:
            return "split"
        raise ValueError(
            "quantities has 'noise_scale' but no second batch size is available: "
            "noise_source='auto' found no DistributedDataParallel model, no "
            "accumulation_steps > 1 and no probe_batch to split; pass one of them or "
            "noise_source='micro_batches'"
        )
    if source == "ddp" and not ddp:
        raise ValueError(
            "noise_source='ddp' needs the DistributedDataParallel-wrapped model as model"
        )
    if source == "micro_batches" and accum == 1:
        raise ValueError(
            "noise_source='micro_batches' needs accumulation_steps > 1 (one micro-batch "
            "per step gives no second batch size)"
        )
    if source == "split" and probe is None and not later:
        raise ValueError("noise_source='split' needs a probe_batch to split")
    return source
