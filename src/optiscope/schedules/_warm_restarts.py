"""Cosine annealing with warm restarts (SGDR), with the cycle found by exact arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

from optiscope._internal.checks import check_int, check_lr, check_real
from optiscope.schedules._base import Schedule
from optiscope.schedules._classic import cosine_annealing

__all__ = ["CosineAnnealingWarmRestarts"]

# Beyond this many cycles the exact rational boundaries get large (T_mult barely above 1);
# there the cycle is found in floating point, like torch does everywhere.
_EXACT_CYCLES = 2000


class CosineAnnealingWarmRestarts(Schedule):
    """Cosine annealing that restarts at the peak; cycle ``k`` lasts ``T_0 * T_mult**k``.

    .. math:: \\text{lr}(t) = \\text{min} + (\\text{initial} - \\text{min})\\,
        d^{k} \\frac{1 + \\cos(\\pi\\, t_{cur} / T_k)}{2}

    where ``k`` is the cycle containing ``t``, ``t_cur`` the steps since it began, and
    ``d`` the ``cycle_decay``. The cycle is found exactly: boundaries
    ``T_0 (T_mult^k - 1) / (T_mult - 1)`` are compared as rationals (the exact binary
    values of the floats given), so a step on a restart always gets the peak. torch's
    ``CosineAnnealingWarmRestarts.step(epoch)`` and timm take a floating-point log and put
    e.g. ``T_0=1, T_mult=10, t=111`` in the previous cycle, near the minimum.

    Args:
        initial_lr: Peak of the first cycle, ``>= 0``.
        min_lr: Minimum of every cycle, in ``[0, initial_lr]``.
        T_0: Length of the first cycle, ``> 0``.
        T_mult: Growth of the cycle length, a real ``>= 1`` (the guide loops forever
            for ``T_mult < 1``).
        cycle_decay: The peak above ``min_lr`` is multiplied by this each restart, in
            ``(0, 1]``.
        cycle_limit: Number of cycles; after the last one the rate stays at ``min_lr``.
            None for no limit.

    Raises:
        ValueError: An argument is out of range, NaN or infinite.
        TypeError: An argument has the wrong type.

    Example:
        >>> s = CosineAnnealingWarmRestarts(0.1, 0.0, T_0=10, T_mult=2)
        >>> s(0), s(10), s(30), round(s(20), 6)
        (0.1, 0.1, 0.1, 0.05)
        >>> CosineAnnealingWarmRestarts(1.0, 0.0, T_0=1, T_mult=10)(111)
        1.0
    """

    peak_param = "initial_lr"
    unit = "Epoch"
    plot_steps = 100  # the guide's plot(epochs=100)

    def __init__(
        self,
        initial_lr: float = 0.1,
        min_lr: float = 0.0,
        T_0: float = 10,
        T_mult: float = 2,
        *,
        cycle_decay: float = 1.0,
        cycle_limit: int | None = None,
    ):
        self.initial_lr = check_lr("initial_lr", initial_lr)
        self.min_lr = check_lr("min_lr", min_lr)
        if self.min_lr > self.initial_lr:
            raise ValueError(
                f"min_lr must be <= initial_lr ({self.initial_lr!r}), got {self.min_lr!r}"
            )
        self.T_0 = check_real("T_0", T_0, low=0.0, low_open=True)
        self.T_mult = check_real("T_mult", T_mult, low=1.0)
        self.cycle_decay = check_real("cycle_decay", cycle_decay, low=0.0, low_open=True, high=1.0)
        self.cycle_limit = (
            None if cycle_limit is None else check_int("cycle_limit", cycle_limit, low=1)
        )
        self._t0 = Fraction(self.T_0)
        self._m = Fraction(self.T_mult)
        # Integer T_0 and T_mult: boundaries are integers, so plain int arithmetic is exact.
        self._integral = isinstance(self.T_0, int) and isinstance(self.T_mult, int)
        self._starts: dict[int, Fraction | int] = {}

    def _start(self, k: int) -> Fraction | int:
        """Exact first step of cycle ``k`` (memoised: boundaries are reused every step)."""
        start = self._starts.get(k)
        if start is None:
            t0, m = (self.T_0, self.T_mult) if self._integral else (self._t0, self._m)
            if m == 1:
                start = t0 * k
            elif self._integral:
                start = t0 * (m**k - 1) // (m - 1)  # exact: m - 1 divides m**k - 1
            else:
                start = t0 * (m**k - 1) / (m - 1)
            if len(self._starts) < 4096:
                self._starts[k] = start
        return start

    def cycle(self, t: float) -> tuple[int, float, float]:
        """Locate step ``t``: ``(cycle index k, steps since the cycle began, cycle length)``.

        Example:
            >>> CosineAnnealingWarmRestarts(T_0=10, T_mult=2).cycle(35)
            (2, 5.0, 40.0)
        """
        t = float(t)
        # Boundaries are integers when T_0 and T_mult are, so floor(t) compares the same.
        tf = math.floor(t) if self._integral else Fraction(t)
        if self._m == 1:
            k = math.floor(tf / self._t0) if not self._integral else tf // self.T_0
        else:
            mf = float(self.T_mult)
            guess = math.log1p(t / self.T_0 * (mf - 1.0)) / math.log(mf)
            k = int(guess) if math.isfinite(guess) else _EXACT_CYCLES + 1
            if k > _EXACT_CYCLES:
                start = self.T_0 * (mf**k - 1.0) / (mf - 1.0)
                return k, max(t - start, 0.0), self.T_0 * mf**k
            # The log is only a first guess; exact comparisons settle the boundary.
            while k > 0 and self._start(k) > tf:
                k -= 1
            while self._start(k + 1) <= tf:
                k += 1
        start = self._start(k)
        if self._integral:
            # t - start is exact in floating point (start is an integer <= t < 2**53)
            return k, t - start, float(self.T_0 * self.T_mult**k)
        return k, float(Fraction(t) - start), float(self._t0 * self._m**k)

    def _value(self, t: float) -> float:
        k, t_cur, t_i = self.cycle(t)
        if self.cycle_limit is not None and k >= self.cycle_limit:
            return self.min_lr
        amplitude = (self.initial_lr - self.min_lr) * self.cycle_decay**k
        return cosine_annealing(self.min_lr, amplitude, t_cur, t_i)

    @property
    def length(self) -> float | None:
        """Where the last cycle ends when ``cycle_limit`` is set, else None (restarts forever)."""
        return None if self.cycle_limit is None else float(self._start(self.cycle_limit))

    def restarts(self, total_steps: float) -> list[float]:
        """Steps below ``total_steps`` where a new cycle begins (restarts, not step 0)."""
        out: list[float] = []
        k = 1
        limit = self.cycle_limit
        while limit is None or k < limit:
            s = self._start(k)
            if s >= total_steps or k > 10_000:
                break
            out.append(float(s))
            k += 1
        return out

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        ev = [(s, "restart") for s in self.restarts(total_steps)]
        if self.cycle_limit is not None:
            end = float(self._start(self.cycle_limit))
            if end < total_steps:
                ev.append((end, "cycle limit"))
        return ev

    def _plot_title(self) -> str:
        return f"Cosine Annealing with Warm Restarts (T_0={self.T_0}, T_mult={self.T_mult})"
