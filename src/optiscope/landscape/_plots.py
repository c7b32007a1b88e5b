"""Pictures of a Landscape: line, contour, 3-D surface, PCA trajectory, interactive HTML.

Every function returns a matplotlib Figure, accepts ``ax=`` and ``path=``, imports
matplotlib lazily and calls pyplot ``show`` only with ``show=True``. Direction 1 is on the
x axis: ``values[i, j]`` is at ``(alphas[i], betas[j])``, so contour gets ``values.T``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from optiscope._internal.figures import finish_figure
from optiscope.landscape._result import Landscape

__all__ = ["plot_line", "plot_contour", "plot_surface", "plot_trajectory", "to_html"]


def _metric(ls: Landscape, metric: str | None) -> tuple[str, np.ndarray]:
    if metric is None:
        metric = "loss" if "loss" in ls.values else next(iter(ls.values))
    if metric not in ls.values:
        raise ValueError(f"metric {metric!r} not in the landscape; it has {list(ls.values)}")
    return metric, ls.values[metric]


def _need(ls: Landscape, two_d: bool) -> None:
    if ls.is_2d != two_d:
        raise ValueError(f"this plot needs a {'2-D' if two_d else '1-D'} landscape")


def _axes(ax: Any, three_d: bool = False, figsize=(7, 5)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig = plt.figure(figsize=figsize)
    return fig, fig.add_subplot(111, projection="3d" if three_d else None)


def _log_values(v: np.ndarray, log: bool) -> np.ndarray:
    if not log:
        return v
    # log10 of non-positive values is undefined; clip to the smallest positive value.
    pos = v[v > 0]
    return np.log10(np.clip(v, pos.min() if pos.size else 1e-12, None))


def plot_line(
    ls: Landscape,
    metric: str | None = None,
    *,
    ax: Any = None,
    label: str | None = None,
    log: bool = False,
    path: str | os.PathLike | None = None,
    show: bool = False,
):
    """The metric along a line, with the centre (alpha = 0) marked.

    Args:
        ls: A 1-D landscape.
        metric: Which metric (default: loss).
        ax: Draw into these axes (several lines can share one).
        label: Legend label of the curve.
        log: Logarithmic y axis.
        path: Also save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        The Figure.

    Example:
        >>> ls = Landscape(np.linspace(-1, 1, 5), None, {"loss": np.linspace(-1, 1, 5) ** 2})
        >>> type(plot_line(ls)).__name__
        'Figure'
    """
    _need(ls, False)
    name, v = _metric(ls, metric)
    fig, ax = _axes(ax)
    ax.plot(ls.alphas, v, linewidth=2, label=label)
    if not ax.get_legend_handles_labels()[1].count("centre"):
        ax.axvline(0.0, color="r", linestyle="--", alpha=0.7, label="centre")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("alpha (direction 1)")
    ax.set_ylabel(name)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return finish_figure(fig, path, show)


def plot_contour(
    ls: Landscape,
    metric: str | None = None,
    *,
    ax: Any = None,
    levels: int = 20,
    filled: bool = True,
    labels: bool = True,
    log: bool = False,
    trajectory: np.ndarray | None = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
):
    """Contour lines (with labels) over a filled contour, direction 1 on the x axis.

    Args:
        ls: A 2-D landscape.
        metric: Which metric (default: loss).
        ax: Draw into these axes.
        levels: Number of contour levels.
        filled: Draw the filled contour under the lines.
        labels: Label the contour lines with their values.
        log: Contour ``log10`` of the values (for losses spanning decades).
        trajectory: ``(T, 2)`` coordinates to draw as a path (see ``project_trajectory``).
        path: Also save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        The Figure.

    Example:
        >>> a = np.linspace(-1, 1, 9)
        >>> ls = Landscape(a, a, {"loss": a[:, None] ** 2 + 3 * a[None, :] ** 2})
        >>> type(plot_contour(ls)).__name__
        'Figure'
    """
    _need(ls, True)
    name, v = _metric(ls, metric)
    z = _log_values(v, log).T  # rows of a contour grid are y: transpose [i, j] -> [j, i]
    fig, ax = _axes(ax)
    if filled:
        cf = ax.contourf(ls.alphas, ls.betas, z, levels=levels, cmap="viridis")
        fig.colorbar(cf, ax=ax, label=f"log10 {name}" if log else name)
    cs = ax.contour(ls.alphas, ls.betas, z, levels=levels, colors="k", linewidths=0.6)
    if labels:
        ax.clabel(cs, inline=True, fontsize=7)
    ax.plot(0, 0, "r*", markersize=14, label="centre")
    if trajectory is not None:
        t = np.asarray(trajectory, dtype=float)
        ax.plot(t[:, 0], t[:, 1], "w.-", markersize=8, linewidth=1.5, label="trajectory")
        ax.plot(t[0, 0], t[0, 1], "wo", markersize=8, markeredgecolor="k")
    ax.set_xlabel("alpha (direction 1)")
    ax.set_ylabel("beta (direction 2)")
    ax.set_title(f"{name} contours")
    ax.legend(loc="upper right")
    return finish_figure(fig, path, show)


def plot_surface(
    ls: Landscape,
    metric: str | None = None,
    *,
    ax: Any = None,
    log: bool = False,
    path: str | os.PathLike | None = None,
    show: bool = False,
):
    """A 3-D surface of a plane (direction 1 on x, direction 2 on y).

    Args:
        ls: A 2-D landscape.
        metric: Which metric (default: loss).
        ax: 3-D axes to draw into.
        log: Plot ``log10`` of the values.
        path: Also save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        The Figure.

    Example:
        >>> a = np.linspace(-1, 1, 5)
        >>> ls = Landscape(a, a, {"loss": a[:, None] ** 2 + a[None, :] ** 2})
        >>> type(plot_surface(ls)).__name__
        'Figure'
    """
    _need(ls, True)
    name, v = _metric(ls, metric)
    fig, ax = _axes(ax, three_d=True)
    aa, bb = np.meshgrid(ls.alphas, ls.betas, indexing="ij")
    surf = ax.plot_surface(aa, bb, _log_values(v, log), cmap="viridis", alpha=0.85)
    fig.colorbar(surf, ax=ax, shrink=0.6)
    ax.set_xlabel("alpha")
    ax.set_ylabel("beta")
    ax.set_zlabel(f"log10 {name}" if log else name)
    return finish_figure(fig, path, show)


def plot_trajectory(
    ls: Landscape,
    coords: np.ndarray,
    metric: str | None = None,
    *,
    explained: np.ndarray | None = None,
    ax: Any = None,
    log: bool = False,
    path: str | os.PathLike | None = None,
    show: bool = False,
):
    """The training path (``project_trajectory`` output) over the contour of a PCA plane.

    Args:
        ls: A 2-D landscape on the PCA plane.
        coords: ``(T, 2)`` coordinates of the checkpoints.
        metric: Which metric (default: loss).
        explained: Explained variance ratios, shown in the axis labels.
        ax: Draw into these axes.
        log: Contour ``log10`` of the values.
        path: Also save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        The Figure.

    Example:
        >>> a = np.linspace(-1, 1, 5)
        >>> ls = Landscape(a, a, {"loss": a[:, None] ** 2 + a[None, :] ** 2})
        >>> type(plot_trajectory(ls, np.array([[0.9, 0.5], [0.1, 0.1]]))).__name__
        'Figure'
    """
    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (T, 2), got {coords.shape}")
    fig = plot_contour(ls, metric, ax=ax, log=log, trajectory=coords)
    ax = fig.axes[0] if ax is None else ax
    if explained is not None:
        ax.set_xlabel(f"PC1 ({100 * explained[0]:.1f}% of variance)")
        ax.set_ylabel(f"PC2 ({100 * explained[1]:.1f}% of variance)")
    ax.set_title("training trajectory on the PCA plane")
    return finish_figure(fig, path, show)


def to_html(
    ls: Landscape,
    path: str | os.PathLike,
    metric: str | None = None,
    *,
    log: bool = False,
    title: str | None = None,
) -> Path:
    """An interactive 3-D surface page; plotly.js is embedded, nothing loads from the network.

    Args:
        ls: A 2-D landscape.
        path: The ``.html`` file to write.
        metric: Which metric (default: loss).
        log: Plot ``log10`` of the values.
        title: Page title.

    Returns:
        The path written.

    Raises:
        ImportError: plotly is not installed (``pip install optiscope[plotly]``).
    """
    _need(ls, True)
    try:
        import plotly.graph_objects as go
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_html needs plotly: pip install plotly") from e
    name, v = _metric(ls, metric)
    # plotly's surface z is indexed [y, x]: transpose so direction 1 stays on x.
    fig = go.Figure(go.Surface(x=ls.alphas, y=ls.betas, z=_log_values(v, log).T))
    fig.update_layout(
        title=title or f"{name} surface",
        scene={"xaxis_title": "alpha", "yaxis_title": "beta", "zaxis_title": name},
    )
    path = Path(path)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
