"""Small helpers shared by the curvature functions (argument checks live in
:mod:`optiscope._internal.checks`)."""

from __future__ import annotations

import torch

from optiscope._internal.checks import check_positive
from optiscope.curvature._hvp import HessianOperator


def check_tol(value: object) -> float:
    """A relative tolerance: a finite number > 0."""
    return check_positive("tol", value, allow_inf=False)


def make_generator(op: HessianOperator, seed: int | None) -> torch.Generator:
    """A generator on the operator's device, seeded (or fresh entropy when ``seed`` is None).

    Probes never draw from the global RNG, so curvature calls leave it untouched.
    """
    g = torch.Generator(device=op.device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def fix_sign(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude entry is positive (a deterministic sign)."""
    idx = vectors.abs().argmax(dim=-1, keepdim=True)
    sign = torch.sign(vectors.gather(-1, idx))
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)
