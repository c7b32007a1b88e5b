"""Clippers whose threshold adapts to the run: AutoClip (percentile) and ZClip (z-score).

Their statistics live in small tensors on the gradients' device and are updated with
``torch.where`` instead of Python branches, so a call never waits for the device. A NaN or
infinite norm never enters the statistics and leaves the gradients untouched.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from optiscope._internal.checks import (
    check_non_negative_int,
    check_norm_type,
    check_open_unit,
    check_positive,
    check_positive_int,
    check_real,
)
from optiscope.clipping import _checks
from optiscope.clipping._clippers import ClipResult, _Base, coef_for, make_result
from optiscope.clipping._functional import EPS, TensorOrTensors, scale_, total_norm

__all__ = ["AutoClip", "ZClip"]


class _Stateful(_Base):
    """Device-state plumbing: tensors named in ``_state`` follow the gradients' device."""

    _state: tuple[str, ...] = ()

    def _to(self, device: torch.device) -> None:
        for k in self._state:
            t = getattr(self, k)
            if t.device != device:
                setattr(self, k, t.to(device))

    def state_dict(self) -> dict[str, Any]:
        """Configuration plus device statistics (tensors are cloned).

        Returns:
            A dict of numbers and tensors, safe for ``torch.load(weights_only=True)``.
        """
        state = super().state_dict()
        state.update({k: getattr(self, k).clone() for k in self._state})
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore configuration-checked statistics written by :meth:`state_dict`.

        Args:
            state_dict: What :meth:`state_dict` returned (from this clipper or a copy).

        Raises:
            ValueError: Another kind of clipper, a different configuration, or a statistic
                of the wrong shape.
            KeyError: A key is missing.
        """
        super().load_state_dict(state_dict)
        for k in self._state:
            mine, theirs = getattr(self, k), state_dict[k]
            if not isinstance(theirs, torch.Tensor) or theirs.shape != mine.shape:
                raise ValueError(f"state_dict[{k!r}] must be a tensor of shape {tuple(mine.shape)}")
            setattr(self, k, theirs.detach().to(mine.device, mine.dtype).clone())


class AutoClip(_Stateful):
    """Clip to a percentile of the history of gradient norms (Seetharaman et al. 2020).

    Each call appends the current global norm to a ring buffer of the last
    ``history_size`` finite norms, then clips to their ``percentile``-th percentile
    (linear interpolation, like ``numpy.percentile``). The percentile is taken on the
    device over the filled part of the buffer (a sort with the empty slots pushed to the
    end, then a gather), so there is no host sync.

    Args:
        percentile: Percentile of the history to clip to, in ``(0, 100]``. The paper
            recommends 10.
        history_size: Number of most recent norms kept, ``>= 1``.
        norm_type: Order ``p`` of the norm, in ``(0, inf]``.
        foreach: Use the foreach kernels (None: wherever the device supports them).

    Raises:
        ValueError: An argument out of range or NaN.
        TypeError: ``history_size`` is not an int.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> clip = AutoClip(percentile=50.0, history_size=100)
        >>> for g in [1.0, 2.0, 3.0, 10.0]:
        ...     w.grad = torch.tensor([g]); r = clip([w])
        >>> round(float(r.clipped_norm), 4)  # median of 1, 2, 3, 10
        2.5
    """

    name = "autoclip"
    _config = ("percentile", "history_size", "norm_type")
    _state = ("history", "count")

    def __init__(
        self,
        percentile: float = 10.0,
        history_size: int = 1000,
        norm_type: float = 2.0,
        foreach: bool | None = None,
    ) -> None:
        self.percentile = float(
            check_real("percentile", percentile, low=0.0, high=100.0, low_open=True)
        )
        self.history_size = check_positive_int("history_size", history_size)
        self.norm_type = check_norm_type(norm_type)
        self.foreach = foreach
        self.history = torch.zeros(self.history_size)
        self.count = torch.zeros((), dtype=torch.long)

    def _slots(self, device: torch.device) -> torch.Tensor:
        if getattr(self, "_arange", None) is None or self._arange.device != device:
            self._arange = torch.arange(self.history_size, device=device)
        return self._arange

    def threshold(self) -> torch.Tensor:
        """The current clip threshold: the percentile of the stored norms (inf when empty).

        Returns:
            A 0-d float32 tensor on the state's device.
        """
        size = self.history_size
        n = self.count.clamp(max=size)
        slots = self._slots(self.history.device)
        ordered = torch.where(slots < n, self.history, math.inf).sort().values
        pos = (n - 1).clamp(min=0).double() * (self.percentile / 100.0)
        lo, hi = pos.floor().long(), pos.ceil().long()
        a, b = ordered.index_select(0, lo.view(1)), ordered.index_select(0, hi.view(1))
        value = (a + (b - a) * (pos - lo).to(a.dtype)).view(())
        return torch.where(n > 0, value, math.inf)

    @torch.no_grad()
    def __call__(self, parameters: TensorOrTensors) -> ClipResult:
        """Record the norm, clip to the percentile and report; see the class docstring."""
        grads = _checks.grads_from(parameters)
        norm = total_norm(grads, self.norm_type, foreach=self.foreach)
        if not grads:
            return make_result(norm, torch.ones(()), ~torch.isfinite(norm))
        self._to(norm.device)
        finite = torch.isfinite(norm)
        slot = (self.count % self.history_size).view(1)
        old = self.history.index_select(0, slot)
        new = torch.where(finite, norm.to(self.history.dtype), old)
        self.history.index_copy_(0, slot, new)
        self.count = self.count + finite
        coef, nonfinite = coef_for(norm, self.threshold().to(norm.dtype), ~finite)
        scale_(grads, coef, self.foreach)
        return make_result(norm, coef, nonfinite)


ClipOption = Literal["adaptive_scaling", "threshold", "mean"]


class ZClip(_Stateful):
    r"""Clip gradient-norm spikes by their z-score against EMA statistics (ZClip, 2025).

    During the first ``warmup_steps`` calls the finite norms are collected; their mean and
    population variance then start exponential moving averages :math:`\mu, \sigma^2`
    (factor ``alpha``). ``max_grad_norm``, if given, is a fixed global-norm cap applied at
    every call, during warm-up and after (as in the authors' reference code).
    Afterwards a norm :math:`g` with :math:`z = (g-\mu)/\sigma > z_{thresh}` is a spike
    and is clipped to

    - ``"adaptive_scaling"`` (the paper's default): :math:`\mu + z_{thresh}^2\sigma/z`,
      clipping harder the larger the spike;
    - ``"threshold"``: :math:`\mu + z_{thresh}\sigma`;
    - ``"mean"``: :math:`\mu`.

    The EMAs are then updated with the clipped norm, so a spike does not raise the next
    threshold. A NaN or infinite norm never enters the statistics (if every warm-up norm
    was non-finite, the first finite norm starts the EMAs, as with ``warmup_steps=0``).
    The phase is decided by a host-side call counter, so each call runs only its phase's
    few scalar kernels.

    Args:
        alpha: EMA factor, in ``(0, 1)`` (closer to 1: slower statistics).
        z_thresh: z-score above which a norm is a spike, in ``(0, inf)``.
        warmup_steps: Calls spent collecting norms before spike detection, ``>= 0``
            (0: the first finite norm starts the EMAs with zero variance).
        max_grad_norm: Fixed global-norm cap at every call, in ``(0, inf]``, or None.
        clip_option: Where a spike is clipped to; see above.
        norm_type: Order ``p`` of the norm, in ``(0, inf]``.
        foreach: Use the foreach kernels (None: wherever the device supports them).

    Raises:
        ValueError: An argument out of range or NaN, or an unknown ``clip_option``.
        TypeError: ``warmup_steps`` is not an int.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> clip = ZClip(warmup_steps=3, max_grad_norm=None)
        >>> for g in [1.0, 1.1, 0.9, 1.0, 50.0]:
        ...     w.grad = torch.tensor([g]); r = clip([w])
        >>> bool(r.clipped), float(r.clipped_norm) < 2.0
        (True, True)
    """

    name = "zclip"
    _config = ("alpha", "z_thresh", "warmup_steps", "max_grad_norm", "clip_option", "norm_type")
    _state = ("mean", "var", "initialized", "warmup_norms", "warmup_finite")

    def __init__(
        self,
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        warmup_steps: int = 25,
        max_grad_norm: float | None = 1.0,
        clip_option: ClipOption = "adaptive_scaling",
        norm_type: float = 2.0,
        foreach: bool | None = None,
    ) -> None:
        self.alpha = check_open_unit("alpha", alpha)
        self.z_thresh = check_positive("z_thresh", z_thresh, allow_inf=False)
        self.warmup_steps = check_non_negative_int("warmup_steps", warmup_steps)
        self.max_grad_norm = (
            None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm)
        )
        if clip_option not in ("adaptive_scaling", "threshold", "mean"):
            raise ValueError(
                "clip_option must be 'adaptive_scaling', 'threshold' or 'mean', "
                f"got {clip_option!r}"
            )
        self.clip_option = clip_option
        self.norm_type = check_norm_type(norm_type)
        self.foreach = foreach
        self.calls = 0
        self.mean = torch.zeros(())
        self.var = torch.zeros(())
        self.initialized = torch.zeros((), dtype=torch.bool)
        self.warmup_norms = torch.zeros(self.warmup_steps)
        self.warmup_finite = torch.zeros(self.warmup_steps, dtype=torch.bool)

    def state_dict(self) -> dict[str, Any]:
        """Configuration, the call counter and the device statistics.

        Returns:
            A dict of numbers and tensors, safe for ``torch.load(weights_only=True)``.
        """
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Args:
            state_dict: From a ZClip with the same configuration.

        Raises:
            ValueError: Another clipper, another configuration, or a bad statistic.
            KeyError: A key is missing.
        """
        if state_dict.get("clipper") == self.name:
            calls = check_non_negative_int("calls", state_dict["calls"])
        super().load_state_dict(state_dict)
        self.calls = calls

    def _warmup(self, g: torch.Tensor, finite: torch.Tensor) -> float:
        """Collect the norm; returns the limit (max_grad_norm or inf)."""
        i = self.calls
        self.warmup_norms[i] = torch.where(finite, g, 0.0)
        self.warmup_finite[i] = finite
        if i == self.warmup_steps - 1:
            # Masked mean and population variance of the finite warm-up norms.
            w = self.warmup_finite.to(g.dtype)
            k = w.sum()
            mean = (self.warmup_norms * w).sum() / k.clamp(min=1)
            var = (((self.warmup_norms - mean) ** 2) * w).sum() / k.clamp(min=1)
            self.initialized = k > 0
            self.mean, self.var = mean, var
        return math.inf if self.max_grad_norm is None else self.max_grad_norm

    def _track(self, g: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
        """Spike detection and EMA update; returns the limit (inf when no spike)."""
        std = self.var.sqrt()
        z = (g - self.mean) / (std + EPS)
        spike = self.initialized & (z > self.z_thresh)
        if self.clip_option == "adaptive_scaling":
            target = self.mean + self.z_thresh**2 * std / z
        elif self.clip_option == "threshold":
            target = self.mean + self.z_thresh * std
        else:
            target = self.mean
        limit = torch.where(spike, target, math.inf)
        v = torch.minimum(g, limit)
        ema_mean = self.alpha * self.mean + (1 - self.alpha) * v
        ema_var = self.alpha * self.var + (1 - self.alpha) * (v - ema_mean) ** 2
        # Not yet initialised (warmup_steps=0, or no finite warm-up norm): start from g.
        ema_mean = torch.where(self.initialized, ema_mean, g)
        ema_var = torch.where(self.initialized, ema_var, 0.0)
        self.mean = torch.where(finite, ema_mean, self.mean)
        self.var = torch.where(finite, ema_var, self.var)
        self.initialized = self.initialized | finite
        return limit

    @torch.no_grad()
    def __call__(self, parameters: TensorOrTensors) -> ClipResult:
        """Clip spikes in place, update the statistics and report; see the class docstring."""
        grads = _checks.grads_from(parameters)
        norm = total_norm(grads, self.norm_type, foreach=self.foreach)
        if not grads:
            return make_result(norm, torch.ones(()), ~torch.isfinite(norm))
        self._to(norm.device)
        g = norm.to(self.mean.dtype)
        finite = torch.isfinite(g)
        if self.calls < self.warmup_steps:
            limit = self._warmup(g, finite)
        else:
            limit = self._track(g, finite)
            if self.max_grad_norm is not None:
                # The fixed cap holds after warm-up too (as in the reference code); the
                # EMAs above saw only the spike threshold, not this cap.
                limit = torch.clamp(limit, max=self.max_grad_norm)
        self.calls += 1
        coef, nonfinite = coef_for(g, limit, ~finite)
        if not (isinstance(limit, float) and math.isinf(limit)):
            scale_(grads, coef, self.foreach)
        return make_result(norm, coef.to(norm.dtype), nonfinite)
