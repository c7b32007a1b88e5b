"""Gradient clipping and gradient health.

The guide's ``clip_grad_value_``/``clip_grad_norm_`` (on torch's foreach kernels, no host
sync), unit-wise adaptive clipping, clipper objects with one interface (``NormClip``,
``ValueClip``, ``AGC``, ``AutoClip``, ``ZClip``, ``NoClip``) and a name registry, gradient
statistics that stay on the device, and the guide's tracking loop and plot.

AMP order: ``scaler.scale(loss).backward()``, ``scaler.unscale_(optimizer)``, clip,
``scaler.step(optimizer)``, ``scaler.update()``. Clip the *unscaled* gradients; norms of
fp16/bf16 gradients are computed in float32 so they do not overflow.
"""

from optiscope.clipping._adaptive import AutoClip, ZClip
from optiscope.clipping._clippers import AGC, Clipper, ClipResult, NoClip, NormClip, ValueClip
from optiscope.clipping._functional import adaptive_clip_grad_, clip_grad_norm_, clip_grad_value_
from optiscope.clipping._registry import CLIPPERS, get_clipper
from optiscope.clipping._stats import GradientTracker, grad_norms
from optiscope.clipping._tracking import plot_gradient_norms, train_with_gradient_tracking

__all__ = [
    "AGC",
    "CLIPPERS",
    "AutoClip",
    "ClipResult",
    "Clipper",
    "GradientTracker",
    "NoClip",
    "NormClip",
    "ValueClip",
    "ZClip",
    "adaptive_clip_grad_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "get_clipper",
    "grad_norms",
    "plot_gradient_norms",
    "train_with_gradient_tracking",
]
