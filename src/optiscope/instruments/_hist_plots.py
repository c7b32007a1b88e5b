"""The per-sample gradient histograms' figures and their dashboard panels (matplotlib, lazy);
:mod:`optiscope.instruments.plots` exports :func:`grad_hist_figure` and
:func:`grad_hist_layers_figure`."""

from __future__ import annotations

import os
from typing import Any

from optiscope._internal.figures import finish_figure

__all__ = [
    "Histograms",
    "grad_hist_figure",
    "grad_hist_layers_figure",
    "hist_1d_panel",
    "hist_2d_panel",
    "layer_keys",
]

Histograms = dict[str, list[tuple[int, Any]]]  # key -> [(step, Histogram), ...]


def _density(h: Any) -> Any:
    """A 1-D histogram's counts as a density (NaN where empty, so a log axis skips it)."""
    import numpy as np

    width = np.diff(h.edges[0])
    density = h.counts / max(h.total, 1.0) / np.where(width > 0, width, 1.0)
    return np.where(density > 0, density, np.nan)


def hist_1d_panel(series: list[tuple[int, Any]], ax: Any) -> None:
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    first, last = series[0][0], series[-1][0]
    norm = mpl.colors.Normalize(first, last if last > first else first + 1)
    for i, (step, h) in enumerate(series):
        last = i == len(series) - 1
        ax.stairs(_density(h), h.edges[0], color=cmap(norm(step)),
                  linewidth=2 if last else 1, alpha=1 if last else 0.5)  # fmt: skip
    ax.set_yscale("log")
    ax.figure.colorbar(mpl.cm.ScalarMappable(norm, cmap), ax=ax, label="optimizer step")
    ax.set_xlabel("per-sample gradient element")
    ax.set_ylabel("density")
    ax.set_title("Gradient elements")


def hist_2d_panel(series: list[tuple[int, Any]], ax: Any) -> None:
    import matplotlib as mpl
    import numpy as np

    step, h = series[-1]
    counts = np.where(h.counts > 0, h.counts, np.nan).T  # rows: parameter value
    mesh = ax.pcolormesh(h.edges[0], h.edges[1], counts, norm=mpl.colors.LogNorm(), cmap="magma")
    ax.figure.colorbar(mesh, ax=ax, label="count")
    ax.set_xlabel("per-sample gradient element")
    ax.set_ylabel("parameter value")
    ax.set_title(f"Gradient element against parameter (step {step})")


def grad_hist_figure(
    histograms: Histograms,
    *,
    axes: tuple[Any, ...] | None = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """Cockpit's per-sample gradient histograms: every measured 1-D histogram (left, as a
    density on a log scale, the last one bold) and the last 2-D one (right: gradient
    element against its parameter's value, log colour).

    A peak that narrows over training while the tails stay wide means a few samples or
    coordinates carry large gradients (outliers, a layer that dominates); mass that
    spreads along the parameter axis at large gradients shows where on the weights the
    large gradients fall. Non-finite elements are not counted.

    ``axes``: the axes to draw into (one per histogram kind present, 1-D first).

    Raises:
        ValueError: There are no histograms.

    Example:
        >>> import numpy as np
        >>> from optiscope.instruments import Histogram
        >>> h = Histogram(np.array([1.0, 4.0, 2.0]), (np.linspace(-1, 1, 4),))
        >>> len(grad_hist_figure({"grad_hist": [(16, h), (32, h)]}).axes[0].patches)
        2
    """
    kinds = [(k, d) for k, d in (("grad_hist", hist_1d_panel), ("grad_hist_2d", hist_2d_panel))
             if histograms.get(k)]  # fmt: skip
    if not kinds:
        raise ValueError("no histograms: measure 'grad_hist' or 'grad_hist_2d' to draw this figure")
    if axes is None:
        import matplotlib.pyplot as plt

        fig, grid = plt.subplots(
            1, len(kinds), figsize=(6 * len(kinds), 4.2), squeeze=False, layout="constrained"
        )
        axes = tuple(grid.flat)
    fig = axes[0].figure
    for ax, (key, draw) in zip(axes, kinds):
        draw(histograms[key], ax)
    return finish_figure(fig, path, show)


def layer_keys(histograms: Histograms) -> list[str]:
    """The per-tensor histogram keys (``"grad_hist/<name>"``, else ``"grad_hist_2d/<name>"``)
    that hold measurements, in recording order."""
    for kind in ("grad_hist/", "grad_hist_2d/"):
        keys = [k for k, v in histograms.items() if k.startswith(kind) and v]
        if keys:
            return keys
    return []


def grad_hist_layers_figure(
    histograms: Histograms,
    *,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """Each parameter tensor's per-sample gradient histogram at the last measurement, one
    small panel per tensor (``hist_per_layer``; the 1-D ones, else the 2-D ones).

    Each panel has its tensor's counts on the shared bins, as a density on a log scale: a
    tensor whose mass sits far out in the tails, or which alone reaches the edge bins,
    is where the large per-sample gradients come from.

    Raises:
        ValueError: There are no per-tensor histograms.

    Example:
        >>> import numpy as np
        >>> from optiscope.instruments import Histogram
        >>> h = Histogram(np.array([1, 4, 2]), (np.linspace(-1, 1, 4),))
        >>> fig = grad_hist_layers_figure({"grad_hist/0.weight": [(8, h)],
        ...                                "grad_hist/0.bias": [(8, h)]})
        >>> [ax.get_title() for ax in fig.axes]
        ['0.weight', '0.bias']
    """
    keys = layer_keys(histograms)
    if not keys:
        raise ValueError(
            "no per-tensor histograms: measure 'grad_hist' or 'grad_hist_2d' with "
            "hist_per_layer=True to draw this figure"
        )
    import math

    import matplotlib as mpl
    import matplotlib.pyplot as plt
    import numpy as np

    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    # One x axis for all: the bins are shared, so the panels compare at a glance.
    fig, grid = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False,
                             sharex=True, layout="constrained")  # fmt: skip
    cells = list(grid.flat)
    step = histograms[keys[0]][-1][0]
    for ax, key in zip(cells, keys):
        h = histograms[key][-1][1]
        if h.counts.ndim == 1:
            ax.stairs(_density(h), h.edges[0], color="C0")
            ax.set_yscale("log")
        else:
            counts = np.where(h.counts > 0, h.counts, np.nan).T
            ax.pcolormesh(h.edges[0], h.edges[1], counts, norm=mpl.colors.LogNorm(),
                          cmap="magma")  # fmt: skip
        ax.set_title(key.split("/", 1)[1])
        ax.tick_params(labelsize="small")
    for ax in cells[len(keys) :]:
        ax.axis("off")
    fig.suptitle(f"Per-sample gradient elements of each parameter tensor (step {step})")
    return finish_figure(fig, path, show)
