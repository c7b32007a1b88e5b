"""The figures of a run, each saved as a PNG under ``run_dir/figures`` with its caption.

Most figures come from the areas that own them (``compare_schedules``, ``Schedule.plot``,
the landscape plots, the LR finder's plot); this module saves them, closes them, and adds
the one that only a finished run can draw: training curves with clip events. A
:class:`FigureSpec` is what every stage hands to the report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FigureSpec", "save_figure", "training_curves_figure", "surface_plotly_json"]

DPI = 110


@dataclass
class FigureSpec:
    """A figure written to disk, with the words the report shows for it."""

    title: str
    caption: str
    file: Path
    kind: str = "image"


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Save a matplotlib Figure as PNG and release it (pyplot keeps figures alive)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _epoch_end_steps(steps: np.ndarray, epochs: np.ndarray) -> dict[int, int]:
    ends: dict[int, int] = {}
    for s, e in zip(steps.tolist(), epochs.tolist()):
        ends[int(e)] = int(s) + 1
    return ends


def training_curves_figure(
    history: Sequence[Any],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    val_accuracies: Sequence[float | None],
    *,
    clip_threshold: float | None = None,
) -> Any:
    """Loss, validation accuracy, learning rate and gradient norm with clip events.

    Args:
        history: Per-step records with ``step``, ``epoch``, ``loss``, ``grad_norm``,
            ``lr``, ``clipped``, ``skipped`` (``AdvancedTrainer.history``).
        train_losses: Mean training loss per epoch.
        val_losses: Validation loss per epoch.
        val_accuracies: Validation accuracy per epoch (None entries are skipped).
        clip_threshold: The norm clipping threshold, drawn as a line when known.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``history`` is empty.

    Example:
        >>> from types import SimpleNamespace as R
        >>> h = [R(step=i, epoch=1, loss=1.0 / (i + 1), grad_norm=2.0 - i, lr=0.1,
        ...        clipped=i == 0, skipped=False) for i in range(2)]
        >>> fig = training_curves_figure(h, [0.7], [0.8], [0.5], clip_threshold=1.5)
        >>> len(fig.axes)
        4
    """
    if not history:
        raise ValueError("history is empty: nothing was trained")
    import matplotlib.pyplot as plt

    steps = np.array([r.step for r in history], dtype=float)
    epochs = np.array([r.epoch for r in history])
    losses = np.array([r.loss for r in history], dtype=float)
    norms = np.array([r.grad_norm for r in history], dtype=float)
    lrs = np.array([r.lr for r in history], dtype=float)
    clipped = np.array([bool(r.clipped) for r in history])
    skipped = np.array([bool(r.skipped) for r in history])
    ends = _epoch_end_steps(steps, epochs)
    epoch_ids = list(range(1, 1 + len(train_losses)))
    x_epoch = [ends.get(e, np.nan) for e in epoch_ids]

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    ax = axes[0, 0]
    ax.plot(steps, losses, lw=0.8, alpha=0.45, color="C0", label="train (per step)")
    ax.plot(x_epoch, train_losses, "o-", color="C0", label="train (epoch mean)")
    if val_losses:
        ax.plot(x_epoch[: len(val_losses)], val_losses, "s-", color="C3", label="validation")
    ax.set(xlabel="optimizer step", ylabel="loss", yscale="log", title="Loss")
    ax.legend()

    ax = axes[0, 1]
    acc = [(x, a) for x, a in zip(x_epoch, val_accuracies) if a is not None]
    if acc:
        ax.plot([x for x, _ in acc], [a for _, a in acc], "s-", color="C2")
        best = max(acc, key=lambda p: p[1])
        ax.annotate(f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(-40, -18))
    else:
        ax.text(0.5, 0.5, "no accuracy (regression)", ha="center", transform=ax.transAxes)
    ax.set(xlabel="optimizer step", ylabel="accuracy", title="Validation accuracy")

    ax = axes[1, 0]
    ax.plot(steps, lrs, color="C1")
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="Learning rate (as applied)")

    ax = axes[1, 1]
    ax.plot(steps, norms, lw=0.8, color="C4", label="pre-clip norm")
    if clipped.any():
        ax.scatter(
            steps[clipped], norms[clipped], s=12, color="C3", zorder=3,
            label=f"clipped ({int(clipped.sum())} of {len(steps)} steps)",
        )  # fmt: skip
    if skipped.any():
        ax.scatter(steps[skipped], norms[skipped], marker="x", color="k", label="skipped")
    if clip_threshold is not None:
        ax.axhline(clip_threshold, ls="--", color="C3", alpha=0.7, label="clip threshold")
    ax.set(xlabel="optimizer step", ylabel="gradient norm", yscale="log", title="Gradient norm")
    ax.legend()
    for a in axes.flat:
        a.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def surface_plotly_json(
    alphas: np.ndarray,
    betas: np.ndarray,
    values: np.ndarray,
    *,
    title: str,
    path: str | os.PathLike,
    log: bool = False,
) -> Path:
    """Write an interactive 3-D surface as plotly JSON, for the report to inline.

    ``values[i, j]`` is at ``(alphas[i], betas[j])``; plotly indexes ``z[y][x]``, so the
    array is transposed to keep direction 1 on the x axis (as in every optiscope plot).

    Raises:
        ImportError: plotly is not installed.
    """
    import plotly.graph_objects as go
    import plotly.io as pio

    z = np.log10(np.maximum(values, np.finfo(float).tiny)) if log else values
    surface = go.Surface(x=np.asarray(alphas), y=np.asarray(betas), z=np.asarray(z).T)
    fig = go.Figure(surface)
    fig.update_layout(
        title=title,
        scene={
            "xaxis_title": "direction 1",
            "yaxis_title": "direction 2",
            "zaxis_title": "log10 loss" if log else "loss",
        },
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    path = Path(path)
    path.write_text(pio.to_json(fig), encoding="utf-8")
    return path
