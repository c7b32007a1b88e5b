"""Plots of schedules: one schedule with its notable points, or many side by side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from optiscope._internal.checks import check_choice, check_int
from optiscope._internal.figures import finish_figure
from optiscope.schedules._base import Schedule

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_schedule", "compare_schedules", "guide_schedules"]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def plot_schedule(
    schedule: Schedule,
    steps: int = 100,
    *,
    ax: Axes | None = None,
    path: str | None = None,
    show: bool = False,
    yscale: str = "linear",
    marks: bool = True,
    title: str | None = None,
    xlabel: str = "Step",
) -> Figure:
    """Draw ``schedule`` over steps ``0..steps-1``; mark peak, minimum and events.

    Args:
        schedule: The schedule.
        steps: Number of steps, ``>= 1``.
        ax: Axes to draw into; a new figure when None.
        path: Save the figure there when given.
        show: Show the figure (pyplot ``show``).
        yscale: ``"linear"`` or ``"log"``.
        marks: Mark the peak, the minimum and the schedule's events
            (warmup end, restarts, milestones).
        title: Title; the schedule's repr by default.
        xlabel: x-axis label.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``steps < 1`` or an unknown ``yscale``.

    Example:
        >>> from optiscope.schedules import CosineAnnealingWarmRestarts
        >>> fig = plot_schedule(CosineAnnealingWarmRestarts(), 100)
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    steps = check_int("steps", steps, low=1)
    check_choice("yscale", yscale, ("linear", "log"))
    fig, ax = _axes(ax, (10, 4))
    lrs = schedule.values(steps)
    ax.plot(np.arange(steps), lrs, linewidth=2, label="learning rate")
    if marks:
        ymax = int(np.argmax(lrs))
        ymin = int(np.argmin(lrs))
        ax.plot([ymax], [lrs[ymax]], "v", color="tab:red", label=f"peak {lrs[ymax]:.3g} @ {ymax}")
        ax.plot([ymin], [lrs[ymin]], "^", color="tab:green", label=f"min {lrs[ymin]:.3g} @ {ymin}")
        seen: set[str] = set()
        for step, label in schedule.events(steps):
            ax.axvline(
                step,
                color="gray",
                linestyle="--",
                alpha=0.6,
                label=None if label in seen else label,
            )
            seen.add(label)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Learning Rate")
    ax.set_yscale(yscale)
    ax.set_title(title if title is not None else repr(schedule))
    ax.grid(True, alpha=0.3)
    return finish_figure(fig, path, show)


def guide_schedules(epochs: int = 100) -> dict[str, Schedule]:
    """The four schedules of the guide's comparison, with its parameters.

    Args:
        epochs: Length of the comparison (the cosine's ``T_max``).

    Returns:
        Label -> schedule, in the guide's order.

    Example:
        >>> list(guide_schedules(100))
        ['Step Decay', 'Exponential', 'Cosine Annealing', 'Cosine with Restarts']
    """
    from optiscope.schedules._classic import CosineAnnealingScheduler, ExponentialDecay, StepDecay
    from optiscope.schedules._warm_restarts import CosineAnnealingWarmRestarts

    return {
        "Step Decay": StepDecay(initial_lr=0.1, drop_rate=0.5, epochs_drop=20),
        "Exponential": ExponentialDecay(initial_lr=0.1, decay_rate=0.03),
        "Cosine Annealing": CosineAnnealingScheduler(initial_lr=0.1, min_lr=0.001, T_max=epochs),
        "Cosine with Restarts": CosineAnnealingWarmRestarts(
            initial_lr=0.1, min_lr=0.001, T_0=20, T_mult=2
        ),
    }


def compare_schedules(
    epochs: int = 100,
    schedules: Mapping[str, Schedule] | None = None,
    *,
    yscale: str = "log",
    path: str | None = None,
    ax: Axes | None = None,
    show: bool = False,
) -> Figure:
    """Draw several schedules on one axes (the guide's comparison by default).

    Unlike the guide, nothing is written to the working directory unless ``path`` is
    given, and nothing blocks unless ``show=True``.

    Args:
        epochs: Number of epochs (steps) to draw, ``>= 1``.
        schedules: Label -> schedule; None means the guide's four (step, exponential,
            cosine, cosine with restarts).
        yscale: ``"log"`` (the guide's) or ``"linear"``.
        path: Save the figure there when given.
        ax: Axes to draw into; a new figure when None.
        show: Show the figure (pyplot ``show``).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``epochs < 1``, an empty dict or an unknown ``yscale``.
        TypeError: A value of ``schedules`` is not a Schedule.

    Example:
        >>> fig = compare_schedules(epochs=50, yscale="linear")
    """
    epochs = check_int("epochs", epochs, low=1)
    check_choice("yscale", yscale, ("linear", "log"))
    if schedules is None:
        schedules = guide_schedules(epochs)
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a non-empty dict of name -> Schedule")
    for name, s in schedules.items():
        if not isinstance(s, Schedule):
            raise TypeError(f"schedules[{name!r}] must be a Schedule, got {type(s).__name__}")
    fig, ax = _axes(ax, (14, 6))
    for name, s in schedules.items():
        ax.plot(s.values(epochs), label=name, linewidth=2)
    ax.set_xlabel("Epoch", fontsize=12)
    ax.set_ylabel("Learning Rate", fontsize=12)
    ax.set_title("Comparison of Learning Rate Schedules", fontsize=14)
    ax.legend(fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_yscale(yscale)
    fig.tight_layout()
    return finish_figure(fig, path, show)
