"""Decay schedules without warmup: the guide's step, exponential and cosine, torch's
multi-step and polynomial decays as closed forms, and :class:`Decay` (linear, cosine or
1-sqrt), the decay phase the warmup schedules compose with."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from optiscope._internal.checks import check_choice, check_lr, check_real
from optiscope.schedules._base import Schedule

__all__ = [
    "StepDecay",
    "ExponentialDecay",
    "CosineAnnealingScheduler",
    "MultiStepDecay",
    "PolynomialDecay",
    "Decay",
    "DECAY_SHAPES",
]


def _check_min_le(min_name: str, min_value: float, max_name: str, max_value: float) -> None:
    if min_value > max_value:
        raise ValueError(f"{min_name} must be <= {max_name} ({max_value!r}), got {min_value!r}")


def cosine_annealing(low: float, amplitude: float, t: float, period: float) -> float:
    """``low + amplitude * (1 + cos(pi t / period)) / 2``: SGDR's cosine, in the guide's
    own expression (so :class:`CosineAnnealingScheduler` and every cycle of
    :class:`CosineAnnealingWarmRestarts` give the guide's values bit for bit)."""
    return low + amplitude * (1 + np.cos(np.pi * t / period)) / 2


class StepDecay(Schedule):
    """Multiply the learning rate by ``drop_rate`` every ``epochs_drop`` epochs.

    .. math:: \\text{lr}(t) = \\text{initial\\_lr} \\cdot
        \\text{drop\\_rate}^{\\lfloor t / \\text{epochs\\_drop} \\rfloor}

    Args:
        initial_lr: Learning rate at ``t = 0``, ``>= 0``.
        drop_rate: Factor applied at each drop, in ``(0, 1]``.
        epochs_drop: Epochs between drops, ``> 0``.

    Raises:
        ValueError: An argument is out of range, NaN or infinite.
        TypeError: An argument is not a number.

    Example:
        >>> StepDecay(0.1, 0.5, 10).values([0, 10, 20]).tolist()
        [0.1, 0.05, 0.025]
    """

    peak_param = "initial_lr"
    unit = "Epoch"
    plot_steps = 100  # the guide's plot(epochs=100)

    def __init__(self, initial_lr: float = 0.1, drop_rate: float = 0.5, epochs_drop: float = 10):
        self.initial_lr = check_lr("initial_lr", initial_lr)
        self.drop_rate = check_real("drop_rate", drop_rate, low=0.0, low_open=True, high=1.0)
        self.epochs_drop = check_real("epochs_drop", epochs_drop, low=0.0, low_open=True)

    def _value(self, t: float) -> float:
        return self.initial_lr * (self.drop_rate ** np.floor(t / self.epochs_drop))

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        n = int(np.ceil(total_steps / self.epochs_drop))
        drops = [k * self.epochs_drop for k in range(1, n)]
        return [(d, "drop") for d in drops if d < total_steps]

    def _plot_title(self) -> str:
        return f"Step Decay (drop={self.drop_rate}, every {self.epochs_drop} epochs)"


class ExponentialDecay(Schedule):
    """Exponential decay.

    .. math:: \\text{lr}(t) = \\text{initial\\_lr} \\cdot e^{-\\text{decay\\_rate}\\, t}

    Args:
        initial_lr: Learning rate at ``t = 0``, ``>= 0``.
        decay_rate: Decay per epoch, ``>= 0``.

    Raises:
        ValueError: An argument is negative, NaN or infinite.

    Example:
        >>> round(ExponentialDecay(0.1, 0.05)(20), 6)
        0.036788
    """

    peak_param = "initial_lr"
    unit = "Epoch"
    plot_steps = 100  # the guide's plot(epochs=100)

    def __init__(self, initial_lr: float = 0.1, decay_rate: float = 0.05):
        self.initial_lr = check_lr("initial_lr", initial_lr)
        self.decay_rate = check_real("decay_rate", decay_rate, low=0.0)

    def _value(self, t: float) -> float:
        return self.initial_lr * np.exp(-self.decay_rate * t)

    def _plot_title(self) -> str:
        return f"Exponential Decay (rate={self.decay_rate})"


class CosineAnnealingScheduler(Schedule):
    """Cosine annealing from ``initial_lr`` to ``min_lr`` over ``T_max`` epochs (SGDR).

    .. math:: \\text{lr}(t) = \\text{min} + (\\text{initial} - \\text{min})
        \\frac{1 + \\cos(\\pi \\min(t, T_{max}) / T_{max})}{2}

    The guide's formula rises again after ``T_max``; here the schedule stays at
    ``min_lr`` from ``T_max`` on (values up to ``T_max`` are the guide's, bit for bit).

    Args:
        initial_lr: Learning rate at ``t = 0``, ``>= 0``.
        min_lr: Final learning rate, in ``[0, initial_lr]``.
        T_max: Length of the annealing, ``> 0``.

    Raises:
        ValueError: An argument is out of range, NaN or infinite.

    Example:
        >>> s = CosineAnnealingScheduler(0.1, 0.0, 100)
        >>> s(0), s(50), s(100), s(150)
        (0.1, 0.05, 0.0, 0.0)
    """

    peak_param = "initial_lr"
    length_param = "T_max"
    unit = "Epoch"
    plot_steps = 100  # the guide's plot(epochs=100)

    def __init__(self, initial_lr: float = 0.1, min_lr: float = 0.0, T_max: float = 100):
        self.initial_lr = check_lr("initial_lr", initial_lr)
        self.min_lr = check_lr("min_lr", min_lr)
        _check_min_le("min_lr", self.min_lr, "initial_lr", self.initial_lr)
        self.T_max = check_real("T_max", T_max, low=0.0, low_open=True)

    def _value(self, t: float) -> float:
        amplitude = self.initial_lr - self.min_lr
        return cosine_annealing(self.min_lr, amplitude, min(t, self.T_max), self.T_max)

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        return [(self.T_max, "end of annealing")] if self.T_max < total_steps else []

    def _plot_title(self) -> str:
        return f"Cosine Annealing (T_max={self.T_max})"


class MultiStepDecay(Schedule):
    """Multiply by ``gamma`` at each milestone (closed form of torch ``MultiStepLR``).

    .. math:: \\text{lr}(t) = \\text{peak\\_lr} \\cdot \\gamma^{\\#\\{m_i \\le t\\}}

    Args:
        peak_lr: Learning rate before the first milestone, ``>= 0``.
        milestones: Steps where the rate drops, non-decreasing, ``> 0``; a repeated
            milestone drops twice, as in torch.
        gamma: Factor per milestone, in ``(0, 1]``.

    Raises:
        ValueError: Milestones unsorted or not positive; an argument out of range.
        TypeError: ``milestones`` is not a sequence of numbers.

    Example:
        >>> MultiStepDecay(1.0, [2, 4], 0.5).values(6).tolist()
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    peak_param = "peak_lr"

    def __init__(
        self, peak_lr: float = 0.1, milestones: Sequence[float] = (30, 80), gamma: float = 0.1
    ):
        self.peak_lr = check_lr("peak_lr", peak_lr)
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
            raise TypeError(f"milestones must be a sequence of steps, got {milestones!r}")
        ms = [
            check_real(f"milestones[{i}]", m, low=0.0, low_open=True)
            for i, m in enumerate(milestones)
        ]
        if any(b < a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones must be non-decreasing, got {ms}")
        self.milestones = ms
        self.gamma = check_real("gamma", gamma, low=0.0, low_open=True, high=1.0)

    def _value(self, t: float) -> float:
        return self.peak_lr * self.gamma ** bisect.bisect_right(self.milestones, t)

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        return [(m, "milestone") for m in sorted(set(self.milestones)) if m < total_steps]


class PolynomialDecay(Schedule):
    """Polynomial decay from ``peak_lr`` to ``end_lr`` over ``decay_steps``, then constant
    (torch ``PolynomialLR`` when ``end_lr = 0``).

    .. math:: \\text{lr}(t) = \\text{end} + (\\text{peak} - \\text{end})
        (1 - \\min(t, D)/D)^{\\text{power}}

    Args:
        peak_lr: Learning rate at ``t = 0``, ``>= 0``.
        decay_steps: Steps of the decay ``D``, ``> 0``.
        power: Exponent, ``> 0`` (1 is linear).
        end_lr: Final learning rate, in ``[0, peak_lr]``.

    Raises:
        ValueError: An argument is out of range, NaN or infinite.
        TypeError: An argument is not a number.

    Example:
        >>> PolynomialDecay(1.0, 4, power=1.0).values(6).tolist()
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """

    peak_param = "peak_lr"
    length_param = "decay_steps"

    def __init__(
        self,
        peak_lr: float = 0.1,
        decay_steps: float = 100,
        power: float = 1.0,
        end_lr: float = 0.0,
    ):
        self.peak_lr = check_lr("peak_lr", peak_lr)
        self.decay_steps = check_real("decay_steps", decay_steps, low=0.0, low_open=True)
        self.power = check_real("power", power, low=0.0, low_open=True)
        self.end_lr = check_lr("end_lr", end_lr)
        _check_min_le("end_lr", self.end_lr, "peak_lr", self.peak_lr)

    def _value(self, t: float) -> float:
        frac = 1.0 - min(t, self.decay_steps) / self.decay_steps
        return self.end_lr + (self.peak_lr - self.end_lr) * frac**self.power

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        return [(self.decay_steps, "end of decay")] if self.decay_steps < total_steps else []


#: The shapes of :class:`Decay` (and of the decay phase of ``WarmupStableDecay``).
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


class Decay(Schedule):
    """Decay from ``peak_lr`` to ``end_lr`` over ``decay_steps`` with a chosen shape, then hold.

    With progress ``p = min(t / decay_steps, 1)``: ``"linear"`` is ``1 - p`` (that is
    :class:`PolynomialDecay` with ``power=1``, which it delegates to), ``"cosine"`` is
    ``(1 + cos(pi p)) / 2`` and ``"1-sqrt"`` is ``1 - sqrt(p)`` (Hägele et al. 2024),
    times ``peak_lr - end_lr``, plus ``end_lr``.

    Args:
        peak_lr: Rate at ``t = 0``, ``>= end_lr``.
        decay_steps: Length, ``> 0``.
        end_lr: Final rate, ``>= 0``.
        shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

    Raises:
        ValueError: An argument is out of range or an unknown shape.
        TypeError: An argument has the wrong type.

    Example:
        >>> Decay(1.0, 4, shape="1-sqrt")(1), Decay(1.0, 4, shape="cosine")(2)
        (0.5, 0.5)
    """

    peak_param = "peak_lr"
    length_param = "decay_steps"

    def __init__(
        self,
        peak_lr: float = 0.001,
        decay_steps: float = 1000,
        end_lr: float = 0.0,
        shape: str = "linear",
    ):
        self.peak_lr = check_lr("peak_lr", peak_lr)
        self.decay_steps = check_real("decay_steps", decay_steps, low=0.0, low_open=True)
        self.end_lr = check_lr("end_lr", end_lr)
        _check_min_le("end_lr", self.end_lr, "peak_lr", self.peak_lr)
        self.shape = check_choice("shape", shape, DECAY_SHAPES)
        self._linear = (
            PolynomialDecay(self.peak_lr, self.decay_steps, 1.0, self.end_lr)
            if self.shape == "linear"
            else None
        )

    def _value(self, t: float) -> float:
        if self._linear is not None:
            return self._linear._value(t)
        p = min(t / self.decay_steps, 1.0)
        if self.shape == "cosine":
            # The guide's WarmupCosineSchedule expression, so it matches bit for bit.
            return self.end_lr + (self.peak_lr - self.end_lr) * 0.5 * (1.0 + np.cos(np.pi * p))
        return self.end_lr + (self.peak_lr - self.end_lr) * (1.0 - math.sqrt(p))
