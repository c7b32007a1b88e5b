"""The figure of alpha, the effective relative step size (re-exported by ``plots``)."""

from __future__ import annotations

import os
from typing import Any

from optiscope._internal.figures import finish_figure
from optiscope.instruments._plot_base import History, axes_for, require, series

__all__ = ["ALPHA_SHOWN", "alpha_figure"]

ALPHA_SHOWN = 3.0  # values beyond +-3 are drawn at the edge: the regime is clear by then


def alpha_figure(
    history: History,
    *,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """Alpha over steps, against -1 (no progress), 0 (the minimum along the step) and 1
    (the other side at the same loss).

    Below 0 the step stops short of the minimum along it (a larger rate would help); above
    0 it passes it, and above 1 the loss along the step grows (the rate is too large for
    the curvature). Cockpit's advice: well-tuned SGD lands slightly above 0. Values beyond
    +-3 sit on the edge, marked with triangles.

    Raises:
        ValueError: The history has no alpha.

    Example:
        >>> h = {"alpha": [(1, -0.5), (2, 0.2), (3, 7.0)]}
        >>> [line.get_label() for line in alpha_figure(h).axes[0].lines][:2]
        ['alpha', 'beyond +-3']
    """
    require(history, "alpha", "alpha")
    fig, ax = axes_for(ax, (7, 4.5))
    steps, values = series(history, "alpha")
    inside = [(s, v) for s, v in zip(steps, values) if abs(v) <= ALPHA_SHOWN]
    ax.plot([s for s, _ in inside], [v for _, v in inside], ".", color="C0", label="alpha")
    label = f"beyond +-{ALPHA_SHOWN:g}"
    for sign, marker in ((1, "^"), (-1, "v")):
        edge = [s for s, v in zip(steps, values) if sign * v > ALPHA_SHOWN]
        if edge:
            ax.plot(edge, [sign * ALPHA_SHOWN] * len(edge), marker, linestyle="none",
                    color="C3", markersize=5, label=label)  # fmt: skip
            label = "_nolegend_"
    for level, style, label in ((-1, ":", "no progress"), (0, "--", "minimum along the step"),
                                (1, ":", "other side, same loss")):  # fmt: skip
        ax.axhline(level, color="k", linestyle=style, linewidth=1, label=label)
    ax.axhspan(-1, 1, color="C2", alpha=0.08)
    ax.set_ylim(-ALPHA_SHOWN - 0.2, ALPHA_SHOWN + 0.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("alpha")
    ax.set_title("Effective step size alpha")
    ax.legend(fontsize="small")
    return finish_figure(fig, path, show)
