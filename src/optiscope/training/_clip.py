"""The trainer's view of a clipper: anything that returns the pre-clip norm as a tensor.

``optiscope.clipping`` clippers return a ``ClipResult`` (``total_norm``, ``clipped``,
...); torch-style functions return the norm tensor itself. Both are accepted. The
built-in :class:`NormMeter` clips by global L2 norm with torch's foreach kernels, or only
measures when ``max_norm`` is None, so grad norms are recorded every step either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

__all__ = ["NormMeter", "apply_clipper"]


class NormMeter:
    """Global-norm clipping (``max_norm``) or measuring only (``max_norm=None``).

    Args:
        max_norm: Clip threshold (> 0); None or inf only measures.
        norm_type: The p of the p-norm.
    """

    def __init__(self, max_norm: float | None = None, norm_type: float = 2.0) -> None:
        if max_norm is not None and (math.isnan(max_norm) or max_norm <= 0):
            raise ValueError(f"max_norm must be > 0 or None, got {max_norm!r}")
        self.max_norm = None if max_norm is None or math.isinf(max_norm) else float(max_norm)
        self.norm_type = float(norm_type)

    def __call__(self, parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
        params = [p for p in parameters if p.grad is not None]
        if not params:
            return torch.zeros(())
        grads = [p.grad for p in params]
        norm = get_total_norm(grads, self.norm_type, error_if_nonfinite=False)
        if self.max_norm is not None:
            # Same maths as torch.nn.utils.clip_grad_norm_; the norm is reused, not redone.
            clip_grads_with_norm_(params, self.max_norm, norm)
        return norm

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def apply_clipper(clipper: Any, parameters: list[torch.nn.Parameter]):
    """Run ``clipper`` and return ``(total_norm, clipped)`` as device tensors (or None)."""
    result = clipper(parameters)
    if isinstance(result, torch.Tensor):
        return result, None
    norm = getattr(result, "total_norm", None)
    if not isinstance(norm, torch.Tensor):
        raise TypeError(
            f"clipper {type(clipper).__name__} must return a tensor norm or a result with a "
            f"`total_norm` tensor, got {type(result).__name__}"
        )
    clipped = getattr(result, "clipped", None)
    return norm, clipped if isinstance(clipped, torch.Tensor) else None
