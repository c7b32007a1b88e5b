"""Schedules from language-model training: inverse square root and warmup-stable-decay.

Both are compositions: the warmup is :class:`LinearWarmup`, written once."""

from __future__ import annotations

import math

from optiscope._internal.checks import check_choice, check_lr, check_real
from optiscope.schedules._base import Schedule
from optiscope.schedules._classic import DECAY_SHAPES, Decay
from optiscope.schedules._compose import join
from optiscope.schedules._warmup import LinearWarmup

__all__ = ["InverseSqrt", "InverseSqrtDecay", "WarmupStableDecay"]


class InverseSqrtDecay(Schedule):
    """Inverse square-root decay ``peak_lr * sqrt(timescale / (timescale + t))``.

    ``peak_lr`` at ``t = 0``, then ``~ 1/sqrt(t)`` (big_vision's ``rsqrt``); the decay
    part of :class:`InverseSqrt`.

    Args:
        peak_lr: Rate at ``t = 0``, ``>= 0``.
        timescale: Steps over which the rate halves by ``t = 3 * timescale``, ``> 0``.

    Raises:
        ValueError: An argument is out of range.

    Example:
        >>> InverseSqrtDecay(1.0, 100)(300)
        0.5
    """

    peak_param = "peak_lr"

    def __init__(self, peak_lr: float = 0.001, timescale: float = 4000):
        self.peak_lr = check_lr("peak_lr", peak_lr)
        self.timescale = check_real("timescale", timescale, low=0.0, low_open=True)

    def _value(self, t: float) -> float:
        return self.peak_lr * math.sqrt(self.timescale / (self.timescale + t))


class InverseSqrt(Schedule):
    """The Transformer schedule (Vaswani et al. 2017): linear warmup, then ``1/sqrt(t)`` decay.

    .. math:: \\text{lr}(t) = \\text{peak} \\cdot \\min\\Big(\\frac{t}{w},
        \\sqrt{\\frac{w}{t}}\\Big)

    which is ``d_model^{-0.5} min(t^{-0.5}, t w^{-1.5})`` with
    ``peak = (d_model w)^{-0.5}``. After warmup the decay is
    ``peak * sqrt(timescale / (timescale + t - w))``; ``timescale`` defaults to ``w``,
    which gives the formula above (fairseq's ``inverse_sqrt``).

    Args:
        peak_lr: Rate at the end of warmup, ``>= start_lr``.
        warmup_steps: Steps of linear warmup, ``>= 0``.
        start_lr: Rate at step 0, ``>= 0``.
        timescale: Decay timescale, ``> 0``; required when ``warmup_steps = 0``.

    Raises:
        ValueError: An argument is out of range, or no timescale can be chosen.

    Example:
        >>> s = InverseSqrt(peak_lr=1.0, warmup_steps=100)
        >>> s(50), s(100), s(400)
        (0.5, 1.0, 0.5)
    """

    peak_param = "peak_lr"

    def __init__(
        self,
        peak_lr: float = 0.001,
        warmup_steps: float = 4000,
        start_lr: float = 0.0,
        timescale: float | None = None,
    ):
        self.peak_lr = check_lr("peak_lr", peak_lr)
        self.warmup_steps = check_real("warmup_steps", warmup_steps, low=0.0)
        self.start_lr = check_lr("start_lr", start_lr)
        if timescale is None and self.warmup_steps == 0:
            raise ValueError("timescale must be given (> 0) when warmup_steps is 0")
        self.timescale = (
            None
            if timescale is None
            else check_real("timescale", timescale, low=0.0, low_open=True)
        )
        decay = InverseSqrtDecay(self.peak_lr, self.timescale or self.warmup_steps)
        self._impl = LinearWarmup(self.peak_lr, self.warmup_steps, self.start_lr, after=decay)

    def _value(self, t: float) -> float:
        return self._impl._value(t)

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        return self._impl.events(total_steps)


class WarmupStableDecay(Schedule):
    """Warmup-stable-decay (WSD): ramp to ``peak_lr``, hold it, decay over the last steps.

    Steps ``[0, warmup_steps)`` ramp linearly from ``start_lr``; then the rate is
    ``peak_lr`` until ``total_steps - decay_steps``; the last ``decay_steps`` decay to
    ``end_lr`` with ``decay_shape`` (see :class:`Decay`); after ``total_steps`` it stays
    at ``end_lr``. ``total_steps`` includes warmup and decay.

    Args:
        peak_lr: Rate of the stable phase, ``>= start_lr, end_lr``.
        total_steps: All steps, ``>= warmup_steps + decay_steps``.
        warmup_steps: Steps of warmup, ``>= 0``.
        decay_steps: Steps of decay, ``> 0``; None means 10% of ``total_steps``.
        end_lr: Final rate, ``>= 0``.
        start_lr: Rate at step 0, ``>= 0``.
        decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

    Raises:
        ValueError: An argument is out of range or the phases do not fit.

    Example:
        >>> s = WarmupStableDecay(peak_lr=1.0, total_steps=100, warmup_steps=10, decay_steps=20)
        >>> s(5), s(50), s(90), s(100)
        (0.5, 1.0, 0.5, 0.0)
    """

    peak_param = "peak_lr"
    length_param = "total_steps"

    def __init__(
        self,
        peak_lr: float = 0.001,
        total_steps: float = 10000,
        warmup_steps: float = 0,
        decay_steps: float | None = None,
        end_lr: float = 0.0,
        start_lr: float = 0.0,
        decay_shape: str = "linear",
    ):
        self.peak_lr = check_lr("peak_lr", peak_lr)
        self.total_steps = check_real("total_steps", total_steps, low=0.0, low_open=True)
        self.warmup_steps = check_real("warmup_steps", warmup_steps, low=0.0)
        self.decay_steps = (
            None
            if decay_steps is None
            else check_real("decay_steps", decay_steps, low=0.0, low_open=True)
        )
        self.end_lr = check_lr("end_lr", end_lr)
        self.start_lr = check_lr("start_lr", start_lr)
        self.decay_shape = check_choice("decay_shape", decay_shape, DECAY_SHAPES)
        d = 0.1 * self.total_steps if self.decay_steps is None else self.decay_steps
        if self.warmup_steps + d > self.total_steps:
            raise ValueError(
                f"warmup_steps + decay_steps ({self.warmup_steps} + {d}) must be <= "
                f"total_steps ({self.total_steps})"
            )
        decay = Decay(self.peak_lr, d, self.end_lr, self.decay_shape)
        ramp = LinearWarmup(self.peak_lr, self.warmup_steps, self.start_lr)
        stable_end = self.total_steps - d
        self._impl = join([ramp, decay], [stable_end]) if stable_end > 0 else decay

    def _value(self, t: float) -> float:
        return self._impl._value(t)

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        ev = [
            (s, "decay start" if lab == "join" else lab)
            for s, lab in self._impl.events(total_steps)
        ]
        if self.total_steps < total_steps:
            ev.append((self.total_steps, "end of decay"))
        return ev
