"""Cyclical schedules: 1cycle (Smith & Topin 2017) and CLR (Smith 2015), with momentum."""

from __future__ import annotations

import math

from optiscope._internal.checks import check_choice, check_int, check_lr, check_real
from optiscope.schedules._base import Schedule

__all__ = ["OneCycle", "CyclicLR"]


def _anneal(start: float, end: float, pct: float, strategy: str) -> float:
    # Same expressions as torch's OneCycleLR so values agree to the last bit or two.
    if strategy == "cosine":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _check_momenta(base: float, high: float) -> tuple[float, float]:
    base = check_real("base_momentum", base, low=0.0, high=1.0, high_open=True)
    high = check_real("max_momentum", high, low=0.0, high=1.0, high_open=True)
    if base > high:
        raise ValueError(f"base_momentum must be <= max_momentum ({high!r}), got {base!r}")
    return base, high


class OneCycle(Schedule):
    """The 1cycle policy: warm up to ``peak_lr``, anneal far below the start (torch ``OneCycleLR``).

    The rate starts at ``peak_lr / div_factor``, reaches ``peak_lr`` at step
    ``pct_start * total_steps - 1`` and ends at ``peak_lr / div_factor / final_div_factor``
    at step ``total_steps - 1`` (and stays there). With ``three_phase`` it first comes
    back to the start value, then anneals to the end value. Momentum moves the opposite
    way between ``max_momentum`` and ``base_momentum``; :class:`ScheduleLR` applies it to
    ``momentum`` or Adam's ``betas[0]`` when ``cycle_momentum`` is true.

    Parameters are torch's, except ``peak_lr`` (torch's ``max_lr``) and the spelling
    ``"cosine"`` (torch's ``"cos"`` is accepted too).

    Args:
        peak_lr: Peak learning rate, ``>= 0``.
        total_steps: Number of steps in the cycle (the warmup included), an integer ``>= 2``.
        pct_start: Fraction of steps spent increasing, in ``(0, 1)``; every phase must
            last more than zero steps.
        anneal_strategy: ``"cosine"`` or ``"linear"`` (``"cos"`` means ``"cosine"``).
        div_factor: ``initial = peak_lr / div_factor``, ``> 0``.
        final_div_factor: ``final = initial / final_div_factor``, ``> 0``.
        three_phase: Use the three-phase variant.
        cycle_momentum: Cycle momentum inversely to the rate.
        base_momentum: Momentum at the peak rate, in ``[0, max_momentum]``.
        max_momentum: Momentum at the start and end, in ``[base_momentum, 1)``.

    Raises:
        ValueError: An argument is out of range or a phase would be empty.
        TypeError: ``total_steps`` is not an integer, or an argument has the wrong type.

    Example:
        >>> s = OneCycle(peak_lr=1.0, total_steps=100, pct_start=0.3)
        >>> round(s(0), 10), s(29), round(s(99), 10)
        (0.04, 1.0, 4e-06)
        >>> s.get_momentum(29)
        0.85
    """

    peak_param = "peak_lr"
    length_param = "total_steps"

    def __init__(
        self,
        peak_lr: float = 0.1,
        total_steps: int = 100,
        pct_start: float = 0.3,
        anneal_strategy: str = "cosine",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
    ):
        self.peak_lr = check_lr("peak_lr", peak_lr)
        self.total_steps = check_int("total_steps", total_steps, low=2)
        self.pct_start = check_real(
            "pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True
        )
        strategy = "cosine" if anneal_strategy == "cos" else anneal_strategy  # torch's spelling
        self.anneal_strategy = check_choice("anneal_strategy", strategy, ("cosine", "linear"))
        self.div_factor = check_real("div_factor", div_factor, low=0.0, low_open=True)
        self.final_div_factor = check_real(
            "final_div_factor", final_div_factor, low=0.0, low_open=True
        )
        self.three_phase = bool(three_phase)
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum, self.max_momentum = _check_momenta(base_momentum, max_momentum)
        self.cycles_momentum = self.cycle_momentum
        initial = self.peak_lr / self.div_factor
        final = initial / self.final_div_factor
        hi, lo = self.max_momentum, self.base_momentum
        up_end = float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            # (end step, start lr, end lr, start momentum, end momentum), as torch lays them out
            self._phases = [
                (up_end, initial, self.peak_lr, hi, lo),
                (float(2 * self.pct_start * self.total_steps) - 2, self.peak_lr, initial, lo, hi),
                (self.total_steps - 1, initial, final, hi, hi),
            ]
        else:
            self._phases = [
                (up_end, initial, self.peak_lr, hi, lo),
                (self.total_steps - 1, self.peak_lr, final, lo, hi),
            ]
        start = 0.0
        for i, (end, *_) in enumerate(self._phases):
            if not end > start:
                raise ValueError(
                    f"pct_start={self.pct_start} with total_steps={self.total_steps} makes phase "
                    f"{i + 1} empty (steps {start:g}..{end:g}); pct_start * total_steps must be "
                    f"> 1{' and < (total_steps + 1) / 2' if self.three_phase else ''} and "
                    "< total_steps"
                )
            start = end

    def _locate(self, t: float) -> tuple[tuple, float]:
        t = min(t, self.total_steps - 1)
        start = 0.0
        for i, phase in enumerate(self._phases):
            end = phase[0]
            if t <= end or i == len(self._phases) - 1:
                return phase, (t - start) / (end - start)
            start = end
        raise AssertionError("unreachable")  # pragma: no cover

    def _value(self, t: float) -> float:
        (_, lr0, lr1, _, _), pct = self._locate(t)
        return _anneal(lr0, lr1, pct, self.anneal_strategy)

    def _momentum(self, t: float) -> float | None:
        if not self.cycle_momentum:
            return None
        (_, _, _, m0, m1), pct = self._locate(t)
        return _anneal(m0, m1, pct, self.anneal_strategy)

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        labels = (
            ["warmup end", "back at start", "annealing end"]
            if self.three_phase
            else ["warmup end", "annealing end"]
        )
        return [(p[0], lab) for p, lab in zip(self._phases, labels) if 0 < p[0] < total_steps]


class CyclicLR(Schedule):
    """Cyclical rates between ``start_lr`` and ``peak_lr`` (Smith 2015; torch ``CyclicLR``).

    A cycle rises for ``step_size_up`` steps and falls for ``step_size_down``. The
    amplitude is scaled per cycle by ``mode``: ``"triangular"`` (constant),
    ``"triangular2"`` (halved each cycle) or ``"exp_range"`` (``gamma ** t`` per step).
    Momentum cycles inversely between ``max_momentum`` and ``base_momentum`` when
    ``cycle_momentum`` is true (torch's default).

    Parameters are torch's, except ``start_lr`` and ``peak_lr`` (torch's ``base_lr`` and
    ``max_lr``).

    Args:
        start_lr: Rate at step 0 and at the start of every cycle (the lower bound), ``>= 0``.
        peak_lr: Upper bound, reached at ``step_size_up`` into the first cycle, ``>= start_lr``.
        step_size_up: Steps of the rising half, ``> 0``.
        step_size_down: Steps of the falling half, ``> 0``; None means ``step_size_up``.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: Per-step factor for ``"exp_range"``, in ``(0, 1]``.
        cycle_momentum: Cycle momentum inversely to the rate.
        base_momentum: Momentum at the peak rate, in ``[0, max_momentum]``.
        max_momentum: Momentum at the base rate, in ``[base_momentum, 1)``.

    Raises:
        ValueError: An argument is out of range or an unknown mode.

    Example:
        >>> s = CyclicLR(start_lr=0.0, peak_lr=1.0, step_size_up=2, cycle_momentum=False)
        >>> s.values(5).tolist()
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """

    peak_param = "peak_lr"

    def __init__(
        self,
        start_lr: float = 0.001,
        peak_lr: float = 0.006,
        step_size_up: float = 2000,
        step_size_down: float | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
    ):
        self.start_lr = check_lr("start_lr", start_lr)
        self.peak_lr = check_lr("peak_lr", peak_lr)
        if self.start_lr > self.peak_lr:
            raise ValueError(
                f"start_lr must be <= peak_lr ({self.peak_lr!r}), got {self.start_lr!r}"
            )
        self.step_size_up = check_real("step_size_up", step_size_up, low=0.0, low_open=True)
        self.step_size_down = (
            None
            if step_size_down is None
            else check_real("step_size_down", step_size_down, low=0.0, low_open=True)
        )
        self.mode = check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
        self.gamma = check_real("gamma", gamma, low=0.0, low_open=True, high=1.0)
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum, self.max_momentum = _check_momenta(base_momentum, max_momentum)
        self.cycles_momentum = self.cycle_momentum
        down = self.step_size_up if self.step_size_down is None else self.step_size_down
        self._total = float(self.step_size_up + down)
        self._ratio = self.step_size_up / self._total

    def _scale_and_factor(self, t: float) -> tuple[float, float]:
        cycle = math.floor(1 + t / self._total)
        x = 1.0 + t / self._total - cycle
        if x <= self._ratio:
            factor = x / self._ratio
        else:
            factor = (x - 1) / (self._ratio - 1)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            # = 1 / 2**(cycle - 1) exactly, but underflows to 0 instead of overflowing
            scale = math.ldexp(1.0, -(cycle - 1))
        else:
            scale = self.gamma**t
        return scale, factor

    def _value(self, t: float) -> float:
        scale, factor = self._scale_and_factor(t)
        return self.start_lr + (self.peak_lr - self.start_lr) * factor * scale

    def _momentum(self, t: float) -> float | None:
        if not self.cycle_momentum:
            return None
        scale, factor = self._scale_and_factor(t)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * factor * scale

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        n = int(total_steps // self._total) + 1
        return [
            (k * self._total, "cycle start") for k in range(1, n) if k * self._total < total_steps
        ]
