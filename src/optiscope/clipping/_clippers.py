"""Clipper objects: one interface for every way of clipping, so a trainer takes any of them.

A clipper is called once per optimizer step, after ``backward`` (and after
``GradScaler.unscale_``), with the parameters; it clips their gradients in place and
returns a :class:`ClipResult` of 0-d tensors that stay on the device until a log point.
Stateful clippers (AutoClip, ZClip) keep their statistics on the device too, and
``state_dict``/``load_state_dict`` round-trip them for exact resumption.

When the global norm is NaN or infinite a clipper leaves the gradients as they are and
sets ``nonfinite``: the step should be skipped (GradScaler does that on its own), and
rescaling by a non-finite coefficient would only turn every gradient into NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch

from optiscope._internal.checks import check_norm_type, check_positive
from optiscope.clipping import _checks
from optiscope.clipping._functional import (
    EPS,
    TensorOrTensors,
    agc_,
    group_by_device_and_dtype,
    scale_,
    total_norm,
)

__all__ = ["AGC", "ClipResult", "Clipper", "NoClip", "NormClip", "ValueClip"]


@dataclass(frozen=True)
class ClipResult:
    """What one clipping call did, as 0-d tensors on the gradients' device.

    Attributes:
        total_norm: Global gradient norm before clipping.
        clipped_norm: Global gradient norm after clipping.
        clip_coef: Factor the global norm was multiplied by (``clipped_norm / total_norm``;
            1 when nothing changed). For unit-wise or element-wise clipping it is the
            effective factor on the global norm.
        clipped: Bool tensor, True when any gradient was changed.
        nonfinite: Bool tensor, True when the pre-clip norm was NaN or infinite (the
            gradients were then left untouched and the step should be skipped).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> NormClip(1.0)([w]).to_dict()["total_norm"]
        5.0
    """

    total_norm: torch.Tensor
    clipped_norm: torch.Tensor
    clip_coef: torch.Tensor
    clipped: torch.Tensor
    nonfinite: torch.Tensor

    def to_dict(self) -> dict[str, float | bool]:
        """All fields as Python values, with a single device-to-host copy (a log point).

        Returns:
            ``{"total_norm": float, "clipped_norm": float, "clip_coef": float,
            "clipped": bool, "nonfinite": bool}``.
        """
        names = [f.name for f in fields(self)]
        dtype = self.total_norm.dtype
        device = self.total_norm.device
        values = torch.stack([getattr(self, n).detach().to(device, dtype) for n in names])
        host = values.cpu().tolist()
        return {n: (bool(v) if n in ("clipped", "nonfinite") else v) for n, v in zip(names, host)}


@runtime_checkable
class Clipper(Protocol):
    """The interface every clipper implements (a structural protocol)."""

    def __call__(self, parameters: TensorOrTensors) -> ClipResult:
        """Clip the gradients of ``parameters`` in place and report what was done."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Configuration and device state, as a plain dict of numbers and tensors."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


def coef_for(
    norm: torch.Tensor, limit: torch.Tensor | float, nonfinite: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """torch's coefficient ``min(1, limit / (norm + 1e-6))``, forced to 1 on a non-finite norm.

    Returns:
        ``(coef, nonfinite)`` as 0-d tensors.
    """
    if nonfinite is None:
        nonfinite = ~torch.isfinite(norm)
    coef = torch.clamp(limit / (norm + EPS), max=1.0)
    return torch.where(nonfinite, 1.0, coef), nonfinite


def make_result(norm: torch.Tensor, coef: torch.Tensor, nonfinite: torch.Tensor) -> ClipResult:
    """A ClipResult for a global rescaling by ``coef``."""
    return ClipResult(
        total_norm=norm,
        clipped_norm=norm * coef,
        clip_coef=coef,
        clipped=coef < 1.0,
        nonfinite=nonfinite,
    )


class _Base:
    """Shared state-dict plumbing: configuration keys are checked on load."""

    name: str = ""
    _config: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """The clipper's configuration (and device state, for stateful clippers).

        Returns:
            A dict of numbers and tensors, safe for ``torch.load(weights_only=True)``.
        """
        state: dict[str, Any] = {"clipper": self.name}
        state.update({k: getattr(self, k) for k in self._config})
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state dict written by the same kind of clipper.

        Args:
            state_dict: What :meth:`state_dict` returned.

        Raises:
            ValueError: The dict comes from another kind of clipper, or a configuration
                value differs from this clipper's.
            KeyError: A key is missing.
        """
        if state_dict.get("clipper") != self.name:
            raise ValueError(
                f"state_dict is for clipper {state_dict.get('clipper')!r}, not {self.name!r}"
            )
        for k in self._config:
            mine, theirs = getattr(self, k), state_dict[k]
            same = mine == theirs or (
                isinstance(mine, float) and isinstance(theirs, float) and math.isnan(mine)
            )
            if not same:
                raise ValueError(
                    f"state_dict has {k}={theirs!r} but this {type(self).__name__} has {mine!r}"
                )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._config)
        return f"{type(self).__name__}({args})"


class NormClip(_Base):
    """Clip the global gradient norm to ``max_norm`` (torch's ``clip_grad_norm_`` as a clipper).

    For a finite norm the gradients come out bit-for-bit equal to
    ``torch.nn.utils.clip_grad_norm_``. ``max_norm=inf`` only measures (no multiply).

    Args:
        max_norm: Largest allowed global norm, in ``(0, inf]``.
        norm_type: Order ``p`` of the norm, in ``(0, inf]``.
        foreach: Use the foreach kernels (None: wherever the device supports them).

    Raises:
        ValueError: ``max_norm`` or ``norm_type`` out of range or NaN.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> r = NormClip(max_norm=1.0)([w])
        >>> bool(r.clipped), w.grad
        (True, tensor([0.6000, 0.8000]))
    """

    name = "norm"
    _config = ("max_norm", "norm_type")

    def __init__(
        self, max_norm: float, norm_type: float = 2.0, foreach: bool | None = None
    ) -> None:
        self.max_norm = check_positive("max_norm", max_norm)
        self.norm_type = check_norm_type(norm_type)
        self.foreach = foreach

    @torch.no_grad()
    def __call__(self, parameters: TensorOrTensors) -> ClipResult:
        """Clip in place and report; see the class docstring."""
        grads = _checks.grads_from(parameters)
        norm = total_norm(grads, self.norm_type, foreach=self.foreach)
        coef, nonfinite = coef_for(norm, self.max_norm)
        if grads and not math.isinf(self.max_norm):
            scale_(grads, coef, self.foreach)
        return make_result(norm, coef, nonfinite)


class NoClip(NormClip):
    """Measure the global gradient norm and change nothing (``NormClip(max_norm=inf)``).

    What a trainer uses to record gradient norms when clipping is off.

    Args:
        norm_type: Order ``p`` of the norm, in ``(0, inf]``.
        foreach: Use the foreach kernels (None: wherever the device supports them).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> NoClip()([w]).total_norm, w.grad
        (tensor(5.), tensor([3., 4.]))
    """

    name = "none"
    _config = ("norm_type",)

    def __init__(self, norm_type: float = 2.0, foreach: bool | None = None) -> None:
        super().__init__(float("inf"), norm_type, foreach)


class ValueClip(_Base):
    """Clamp every gradient element to ``[-clip_value, clip_value]``, reporting the norms.

    For finite gradients the values are those of torch's ``clip_grad_value_`` (the clamp is
    two foreach kernels with a device-side limit, so a non-finite gradient is left as it is
    instead of having its infs clamped into plausible numbers). The result carries the
    global ``norm_type`` norm before and after (one norm pass each).

    Args:
        clip_value: Largest allowed magnitude, in ``(0, inf]``.
        norm_type: Order of the norms reported in the result, in ``(0, inf]``.
        foreach: Use the foreach kernels (None: wherever the device supports them).

    Raises:
        ValueError: ``clip_value`` or ``norm_type`` out of range or NaN.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 0.1])
        >>> _ = ValueClip(0.5)([w]); w.grad
        tensor([0.5000, 0.1000])
    """

    name = "value"
    _config = ("clip_value", "norm_type")

    def __init__(
        self, clip_value: float, norm_type: float = 2.0, foreach: bool | None = None
    ) -> None:
        self.clip_value = check_positive("clip_value", clip_value)
        self.norm_type = check_norm_type(norm_type)
        self.foreach = foreach

    @torch.no_grad()
    def __call__(self, parameters: TensorOrTensors) -> ClipResult:
        """Clip in place and report; see the class docstring."""
        grads = _checks.grads_from(parameters)
        norm = total_norm(grads, self.norm_type, foreach=self.foreach)
        nonfinite = ~torch.isfinite(norm)
        if not grads:
            return make_result(norm, torch.ones(()), nonfinite)
        # The limit becomes inf on a non-finite norm, so those gradients stay untouched
        # without a host-side branch.
        for (device, dtype), group in group_by_device_and_dtype(grads).items():
            # In the gradients' own dtype, so the clamp matches torch's to the bit.
            value = torch.full((), self.clip_value, dtype=dtype, device=device)
            hi = torch.where(nonfinite.to(device), math.inf, value)
            torch._foreach_minimum_(group, [hi] * len(group))
            torch._foreach_maximum_(group, [-hi] * len(group))
        after = total_norm(grads, self.norm_type, foreach=self.foreach)
        changed = (after < norm) & ~nonfinite
        coef = torch.where(changed, after / norm, 1.0)
        return ClipResult(norm, torch.where(nonfinite, norm, after), coef, changed, nonfinite)


class AGC(_Base):
    """Adaptive Gradient Clipping (Brock et al. 2021) as a clipper; see ``adaptive_clip_grad_``.

    Each unit's gradient is kept below ``clip_factor`` times its weight norm. The result
    reports the global gradient norm before and after.

    Args:
        clip_factor: Largest allowed gradient-to-weight norm ratio, in ``(0, inf)``.
        eps: Floor on the weight norm, in ``(0, inf)``.
        norm_type: Order ``p`` of the norms, in ``(0, inf]``.

    Raises:
        ValueError: An argument out of range or NaN.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2, 2)); w.grad = torch.ones(2, 2)
        >>> bool(AGC(clip_factor=0.1)([w]).clipped)
        True
    """

    name = "agc"
    _config = ("clip_factor", "eps", "norm_type")

    def __init__(self, clip_factor: float = 0.01, eps: float = 1e-3, norm_type: float = 2.0):
        self.clip_factor = check_positive("clip_factor", clip_factor, allow_inf=False)
        self.eps = check_positive("eps", eps, allow_inf=False)
        self.norm_type = check_norm_type(norm_type)

    @torch.no_grad()
    def __call__(self, parameters: TensorOrTensors) -> ClipResult:
        """Clip in place and report; see the class docstring."""
        params = _checks.as_tensor_list(parameters)
        pre, post, clipped = agc_(
            params, self.clip_factor, self.eps, self.norm_type, skip_nonfinite=True
        )
        nonfinite = ~torch.isfinite(pre)
        coef = torch.where(clipped & ~nonfinite, post / pre, 1.0)
        post = torch.where(nonfinite, pre, post)
        return ClipResult(pre, post, coef, clipped & ~nonfinite, nonfinite)
