"""Composition: run schedules one after another, each seeing the step since its start."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from optiscope._internal.checks import check_real
from optiscope.schedules._base import Schedule

__all__ = ["Join", "join"]


class Join(Schedule):
    """Schedules run in sequence; piece ``i`` starts at ``boundaries[i - 1]``.

    Piece ``i`` is evaluated at ``t - boundaries[i - 1]`` (the step relative to its own
    start), as in optax's ``join_schedules``. Build it with :func:`join`.

    Args:
        schedules: One or more schedules.
        boundaries: ``len(schedules) - 1`` strictly increasing steps ``> 0``.

    Raises:
        TypeError: A piece is not a :class:`Schedule`.
        ValueError: Wrong number of boundaries, or boundaries not increasing/positive.

    Example:
        >>> from optiscope.schedules import Constant
        >>> s = Join([Constant(1.0), Constant(0.5)], [10])
        >>> s(9.5), s(10), s.peak, s.length
        (1.0, 0.5, 1.0, None)
    """

    def __init__(self, schedules: Sequence[Schedule], boundaries: Sequence[float]):
        if isinstance(schedules, Schedule) or not isinstance(schedules, Sequence):
            raise TypeError(f"schedules must be a sequence of Schedule, got {schedules!r}")
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedules[{i}] must be a Schedule, got {type(s).__name__}")
        if len(schedules) < 1:
            raise ValueError("schedules must hold at least one schedule")
        if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
            raise TypeError(f"boundaries must be a sequence of steps, got {boundaries!r}")
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                f"boundaries must have len(schedules) - 1 = {len(schedules) - 1} entries, "
                f"got {len(boundaries)}"
            )
        bs = [
            check_real(f"boundaries[{i}]", b, low=0.0, low_open=True)
            for i, b in enumerate(boundaries)
        ]
        if any(b <= a for a, b in zip(bs, bs[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {bs}")
        self.schedules = list(schedules)
        self.boundaries = bs
        self.cycles_momentum = any(s.cycles_momentum for s in self.schedules)

    def _piece(self, t: float) -> tuple[Schedule, float]:
        i = bisect.bisect_right(self.boundaries, t)
        offset = self.boundaries[i - 1] if i else 0
        return self.schedules[i], t - offset

    def _value(self, t: float) -> float:
        # _piece inlined: this runs once per step of every preview
        i = bisect.bisect_right(self.boundaries, t)
        return self.schedules[i]._value(t - self.boundaries[i - 1] if i else t)

    def _momentum(self, t: float) -> float | None:
        piece, local = self._piece(t)
        return piece._momentum(local)

    @property
    def peak(self) -> float:
        """The highest peak of the pieces."""
        return max(s.peak for s in self.schedules)

    @property
    def length(self) -> float | None:
        """Where the last piece ends (None if it never does)."""
        rest = self.schedules[-1].length
        if rest is None:
            return None
        return (self.boundaries[-1] if self.boundaries else 0) + rest

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        starts = [0.0, *self.boundaries]
        ends = [*self.boundaries, float(total_steps)]
        out: list[tuple[float, str]] = []
        for piece, start, end in zip(self.schedules, starts, ends):
            if start >= total_steps:
                break
            if start > 0:
                out.append((start, "join"))
            span = min(end, total_steps) - start
            out.extend((start + s, label) for s, label in piece.events(math.ceil(span)) if s < span)
        return out


def join(schedules: Sequence[Schedule], boundaries: Sequence[float]) -> Join:
    """Run ``schedules`` one after another, switching at ``boundaries``.

    Each piece sees the step relative to its own start, so warmup-then-cosine is
    ``join([LinearWarmup(peak, w), CosineAnnealingScheduler(peak, 0, T - w)], [w])``.

    Args:
        schedules: The pieces, in order.
        boundaries: ``len(schedules) - 1`` strictly increasing switch steps ``> 0``.

    Returns:
        A :class:`Join` schedule.

    Raises:
        TypeError: A piece is not a Schedule.
        ValueError: Boundaries of the wrong length, not positive or not increasing.

    Example:
        >>> from optiscope.schedules import LinearWarmup, CosineAnnealingScheduler
        >>> s = join([LinearWarmup(1.0, 10), CosineAnnealingScheduler(1.0, 0.0, 90)], [10])
        >>> s(5), s(10), s(100)
        (0.5, 1.0, 0.0)
    """
    return Join(schedules, boundaries)
