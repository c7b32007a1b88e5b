"""A text preview of a schedule before training: where it peaks, restarts and ends."""

from __future__ import annotations

import numpy as np

from optiscope._internal.checks import check_int
from optiscope.schedules._base import Schedule

__all__ = ["describe"]


def _steps(points: list[float]) -> str:
    shown = ", ".join(f"{p:g}" for p in points[:12])
    return shown + (f", ... ({len(points)} in all)" if len(points) > 12 else "")


def describe(schedule: Schedule, total_steps: int) -> str:
    """Summarise ``schedule`` over steps ``0..total_steps-1`` in a few lines.

    Lists the value at step 0, the peak and where it is first reached, the end of
    warmup, restarts and other events, where the minimum is first reached and the value
    at the last step.

    Args:
        schedule: The schedule.
        total_steps: Number of steps, ``>= 1``.

    Returns:
        Multi-line text.

    Raises:
        TypeError: ``schedule`` is not a Schedule.
        ValueError: ``total_steps < 1``.

    Example:
        >>> from optiscope.schedules import WarmupCosineSchedule
        >>> print(describe(WarmupCosineSchedule(10, 100, max_lr=0.1), 100))  # doctest: +ELLIPSIS
        WarmupCosineSchedule(...) over 100 steps
          step 0: 0
          peak: 0.1 at step 10
          warmup end: step 10
          minimum: 0 at step 0
          minimum after the peak: 3.04...e-05 at step 99
          last step 99: 3.04...e-05
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    total_steps = check_int("total_steps", total_steps, low=1)
    lrs = schedule.values(total_steps)
    peak, low = int(np.argmax(lrs)), int(np.argmin(lrs))
    lines = [
        f"{schedule!r} over {total_steps} steps",
        f"  step 0: {lrs[0]:.6g}",
        f"  peak: {lrs[peak]:.6g} at step {peak}",
    ]
    grouped: dict[str, list[float]] = {}
    for step, label in schedule.events(total_steps):
        grouped.setdefault(label, []).append(step)
    for label, points in grouped.items():
        name = label + ("s" if len(points) > 1 and not label.endswith("end") else "")
        lines.append(f"  {name}: step{'s' if len(points) > 1 else ''} {_steps(points)}")
    lines.append(f"  minimum: {lrs[low]:.6g} at step {low}")
    if low < peak:
        # With warmup the global minimum is the start; where the decay bottoms out matters.
        after = peak + int(np.argmin(lrs[peak:]))
        lines.append(f"  minimum after the peak: {lrs[after]:.6g} at step {after}")
    lines.append(f"  last step {total_steps - 1}: {lrs[-1]:.6g}")
    if schedule.cycles_momentum:
        m = schedule.momenta(total_steps)
        lines.append(f"  momentum: {m.min():.4g} .. {m.max():.4g} (cycled inversely to the rate)")
    return "\n".join(lines)
