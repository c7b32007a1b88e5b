"""The trainer's view of a clipper: anything that returns the pre-clip norm as a tensor.

``optiscope.clipping`` clippers return a ``ClipResult`` (``total_norm``, ``clipped``,
...); torch-style functions return the norm tensor itself. Both are accepted. Without a
clipper the trainer still measures the norm every step (``NoClip``), so grad norms are
recorded whether or not clipping is on.
"""

from __future__ import annotations

from typing import Any

import torch

from optiscope.clipping import NoClip, NormClip

__all__ = ["default_clipper", "apply_clipper"]


def default_clipper(max_norm: float | None) -> NormClip:
    """``NormClip(max_norm)``, or the measuring ``NoClip()`` when ``max_norm`` is None."""
    return NoClip() if max_norm is None else NormClip(max_norm)


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
