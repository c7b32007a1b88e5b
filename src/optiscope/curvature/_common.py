"""Argument checks and small helpers shared by the curvature functions."""

from __future__ import annotations

import numbers

import torch

from optiscope.curvature._hvp import HessianOperator


def check_int(name: str, value: object, low: int = 1) -> int:
    # numbers.Integral admits numpy integers; bool is an int subclass but never a count.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def check_tol(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"tol must be a positive number, got {value!r}")
    if value != value or value == float("inf"):
        raise ValueError(f"tol must be finite, got {value!r}")
    return float(value)


def check_seed(seed: object) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return None if seed is None else int(seed)


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
