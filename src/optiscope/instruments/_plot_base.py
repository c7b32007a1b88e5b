"""What every history figure of :mod:`optiscope.instruments.plots` (and the modules it
re-exports) starts from: a series of the history, the error for a missing one, the axes."""

from __future__ import annotations

from typing import Any

__all__ = ["History", "axes_for", "require", "series"]

History = dict[str, list[tuple[int, float]]]


def series(history: History, key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key`` (empty lists when it is missing)."""
    pairs = history.get(key, [])
    return [int(s) for s, _ in pairs], [float(v) for _, v in pairs]


def require(history: History, key: str, what: str) -> None:
    """Raise ValueError naming the quantity ``what`` to measure when ``key`` has no values."""
    if not history.get(key):
        raise ValueError(f"history has no {key!r} values: measure {what!r} to draw this figure")


def axes_for(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``(figure, axes)``: the caller's ``ax`` and its figure, or a new figure of ``figsize``."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax
