"""Warmup: the guide's linear warmup (on any schedule) and warmup + cosine."""

from __future__ import annotations

import numpy as np

from optiscope._internal.checks import check_lr, check_real
from optiscope.schedules._base import Schedule
from optiscope.schedules._classic import Decay
from optiscope.schedules._compose import join

__all__ = ["LinearWarmup", "WarmupCosineSchedule"]


class LinearWarmup(Schedule):
    """Ramp linearly from ``start_lr`` to ``target_lr`` over ``warmup_steps``, then hand over.

    .. math:: \\text{lr}(t) = \\begin{cases}
        \\text{start} + (\\text{target} - \\text{start})\\, t / w & t < w \\\\
        \\text{after}(t - w) & t \\ge w \\end{cases}

    With ``after=None`` the rate stays at ``target_lr`` (the guide's behaviour). A
    ``start_lr > 0`` avoids the wasted first update (lr 0 at step 0) that the guide and
    HF's schedulers have.

    Args:
        target_lr: Rate reached at ``warmup_steps``, ``>= start_lr``; None means
            ``after(0)`` (then ``after`` is required).
        warmup_steps: Length of the ramp, ``>= 0`` (0: no warmup).
        start_lr: Rate at step 0, ``>= 0``.
        after: Schedule that takes over at ``warmup_steps``; it sees ``t - warmup_steps``.

    Raises:
        ValueError: An argument is out of range; ``target_lr=None`` without ``after``.
        TypeError: ``after`` is not a Schedule.

    Example:
        >>> w = LinearWarmup(target_lr=0.1, warmup_steps=10)
        >>> w(0), w(5), w(10), w(1000)
        (0.0, 0.05, 0.1, 0.1)
        >>> from optiscope.schedules import StepDecay
        >>> LinearWarmup(None, 10, after=StepDecay(0.1, 0.5, 10))(25)
        0.05
    """

    plot_steps = 5000  # the guide's plot(total_steps=5000)

    def __init__(
        self,
        target_lr: float | None = 0.1,
        warmup_steps: float = 1000,
        start_lr: float = 0.0,
        after: Schedule | None = None,
    ):
        if after is not None and not isinstance(after, Schedule):
            raise TypeError(f"after must be a Schedule or None, got {type(after).__name__}")
        if target_lr is None and after is None:
            raise ValueError("target_lr=None means after(0), so it needs an `after` schedule")
        self.target_lr = None if target_lr is None else check_lr("target_lr", target_lr)
        self.warmup_steps = check_real("warmup_steps", warmup_steps, low=0.0)
        self.start_lr = check_lr("start_lr", start_lr)
        self.after = after
        self._target = float(after._value(0.0)) if target_lr is None else self.target_lr
        if self.start_lr > self._target:
            raise ValueError(
                f"start_lr must be <= target_lr ({self._target!r}), got {self.start_lr!r}"
            )
        self.cycles_momentum = after is not None and after.cycles_momentum

    def _value(self, t: float) -> float:
        if t < self.warmup_steps:
            # With start_lr = 0 this is the guide's target_lr * (t / warmup_steps), bit for
            # bit (adding and subtracting 0.0 is exact).
            return self.start_lr + (self._target - self.start_lr) * (t / self.warmup_steps)
        if self.after is None:
            return self._target
        return self.after._value(t - self.warmup_steps)

    def _momentum(self, t: float) -> float | None:
        if self.after is None:
            return None
        return self.after._momentum(max(t - self.warmup_steps, 0.0))

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        w = self.warmup_steps
        out = [(w, "warmup end")] if 0 < w < total_steps else []
        if self.after is not None and w < total_steps:
            span = int(np.ceil(total_steps - w))
            out.extend(
                (w + s, label) for s, label in self.after.events(span) if w + s < total_steps
            )
        return out

    @property
    def peak(self) -> float:
        """The higher of ``target_lr`` and the peak of ``after``."""
        return float(self._target if self.after is None else max(self._target, self.after.peak))

    @property
    def length(self) -> float | None:
        """``warmup_steps`` (plus the length of ``after``; None if ``after`` never ends)."""
        if self.after is None:
            return self.warmup_steps
        rest = self.after.length
        return None if rest is None else self.warmup_steps + rest

    def _plot_title(self) -> str:
        return f"Linear Warmup to {self._target}"


class WarmupCosineSchedule(Schedule):
    """Linear warmup from 0 to ``max_lr``, then cosine decay to ``min_lr`` at ``total_steps``.

    .. math:: \\text{lr}(t) = \\begin{cases} \\text{max}\\, t / w & t < w \\\\
        \\text{min} + (\\text{max} - \\text{min}) \\tfrac12 (1 + \\cos \\pi p) & t \\ge w
        \\end{cases}, \\quad p = \\min\\Big(\\frac{t - w}{T - w}, 1\\Big)

    A composition, as in optax: ``join([LinearWarmup(max_lr, w), Decay(max_lr, T - w,
    min_lr, shape="cosine")], [w])``. ``total_steps`` includes the warmup. Values are the
    guide's up to ``total_steps``, bit for bit; after it the rate stays at ``min_lr`` (the
    guide's rises again), and ``warmup_steps >= total_steps`` is an error (the guide
    divides by zero).

    Args:
        warmup_steps: Steps of warmup, ``>= 0`` and ``< total_steps``.
        total_steps: Total steps including warmup, ``> warmup_steps``.
        max_lr: Peak rate, ``>= min_lr``.
        min_lr: Final rate, ``>= 0``.

    Raises:
        ValueError: An argument is out of range, NaN or infinite.
        TypeError: An argument is not a number.

    Example:
        >>> s = WarmupCosineSchedule(warmup_steps=10, total_steps=110, max_lr=1.0)
        >>> s(5), s(10), s(60), s(110)
        (0.5, 1.0, 0.5, 0.0)
        >>> s.peak, s.length
        (1.0, 110)
    """

    peak_param = "max_lr"
    length_param = "total_steps"

    def __init__(
        self,
        warmup_steps: float = 1000,
        total_steps: float = 10000,
        max_lr: float = 0.001,
        min_lr: float = 0.0,
    ):
        self.warmup_steps = check_real("warmup_steps", warmup_steps, low=0.0)
        self.total_steps = check_real("total_steps", total_steps, low=0.0, low_open=True)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(
                f"total_steps must be > warmup_steps ({self.warmup_steps!r}), "
                f"got {self.total_steps!r}"
            )
        self.max_lr = check_lr("max_lr", max_lr)
        self.min_lr = check_lr("min_lr", min_lr)
        if self.min_lr > self.max_lr:
            raise ValueError(f"min_lr must be <= max_lr ({self.max_lr!r}), got {self.min_lr!r}")
        w = self.warmup_steps
        decay = Decay(self.max_lr, self.total_steps - w, self.min_lr, shape="cosine")
        self._impl = join([LinearWarmup(self.max_lr, w), decay], [w]) if w > 0 else decay

    def _value(self, t: float) -> float:
        return self._impl._value(t)

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        out = []
        if 0 < self.warmup_steps < total_steps:
            out.append((self.warmup_steps, "warmup end"))
        if self.total_steps < total_steps:
            out.append((self.total_steps, "end of decay"))
        return out

    def _plot_title(self) -> str:
        return "Warmup + Cosine Decay Schedule"
