"""The guide's three Part 3 functions, same names and defaults, built on the fast engine.

Fixed against the guide: the parameter is found by exact name first (the guide's
substring match took ``"10.weight"`` for ``"0.weight"``), the model is evaluated in eval
mode and restored bit-for-bit even on error, the contour is not transposed, random
directions are filter-normalised (Li et al.) unless asked otherwise, and nothing blocks:
pyplot ``show`` runs only with ``show=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.checks import check_int
from optiscope._internal.figures import finish_figure
from optiscope.batch_loss import BatchLoss
from optiscope.landscape._directions import axis_direction, find_parameter, random_directions
from optiscope.landscape._evaluate import line, plane

__all__ = ["visualize_loss_1d", "visualize_loss_2d", "visualize_loss_random_directions"]


def visualize_loss_1d(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | BatchLoss | None,
    data: Any,
    targets: Any,
    param_name: str,
    param_index: int = 0,
    alpha_range: Sequence[float] = (-1, 1),
    num_points: int = 100,
    *,
    train: bool = False,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> tuple[np.ndarray, list[float]]:
    """The loss along one coordinate ``param_name[param_index]`` of the flat parameter.

    Args:
        model: The network.
        loss_fn: ``loss_fn(outputs, targets)``, a BatchLoss, or None (the model returns
            its loss); see :mod:`optiscope.batch_loss`.
        data: Inputs (tensor) or a DataLoader of batches in any layout (then
            ``targets=None``).
        targets: Labels.
        param_name: Parameter name (exact first, else a unique substring).
        param_index: Index into the flattened parameter.
        alpha_range: ``(low, high)`` of the perturbation.
        num_points: Number of points (>= 2).
        train: Evaluate in train mode (the guide's behaviour for a training model).
        ax: Axes to draw into.
        path: Save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        ``(alphas, losses)`` as the guide: a numpy array and a list of floats.

    Raises:
        ValueError: Unknown or ambiguous name, index out of range, ``num_points < 2``.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
        >>> X, y = torch.randn(100, 2), torch.rand(100, 1).round()
        >>> a, l = visualize_loss_1d(m, nn.BCEWithLogitsLoss(), X, y, "0.weight", num_points=5)
        >>> len(l)
        5
    """
    import matplotlib.pyplot as plt

    d = axis_direction(model, param_name, param_index)
    ls = line(
        model, loss_fn, data, targets, direction=d, alpha_range=alpha_range,
        num_points=num_points, train=train,
    )  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 5)) if ax is None else (ax.figure, ax)
    ax.plot(ls.alphas, ls.loss, linewidth=2)
    ax.axvline(x=0, color="r", linestyle="--", label="Current parameters", alpha=0.7)
    ax.set_xlabel("Perturbation (α)")
    ax.set_ylabel("Loss")
    ax.set_title(f"1D Loss Landscape ({next(iter(d))}[{param_index}])")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    finish_figure(fig, path, show)
    return ls.alphas, [float(v) for v in ls.loss]


def visualize_loss_2d(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | BatchLoss | None,
    data: Any,
    targets: Any,
    param_name: str,
    indices: tuple[int, int] = (0, 1),
    alpha_range: Sequence[float] = (-1, 1),
    num_points: int = 50,
    *,
    train: bool = False,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The loss on a grid of two coordinates of one parameter: contour and 3-D surface.

    Args:
        model: The network.
        loss_fn: ``loss_fn(outputs, targets)``, a BatchLoss, or None (the model returns
            its loss); see :mod:`optiscope.batch_loss`.
        data: Inputs (tensor) or a DataLoader of batches in any layout (then
            ``targets=None``).
        targets: Labels.
        param_name: Parameter name (exact first, else a unique substring).
        indices: Two indices into the flattened parameter.
        alpha_range: ``(low, high)`` on both axes.
        num_points: Points per axis (>= 2).
        train: Evaluate in train mode.
        ax: One axes (contour only) or a pair ``(contour_ax, surface_ax_3d)``.
        path: Save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        ``(alphas, losses)`` with ``losses[i, j]`` at ``alphas[i]`` along ``indices[0]``
        and ``alphas[j]`` along ``indices[1]``.

    Raises:
        ValueError: Unknown name, indices out of range or equal, ``num_points < 2``.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
        >>> X, y = torch.randn(100, 2), torch.rand(100, 1).round()
        >>> a, l = visualize_loss_2d(m, nn.BCEWithLogitsLoss(), X, y, "0.weight", num_points=4)
        >>> l.shape
        (4, 4)
    """
    import matplotlib.pyplot as plt

    if len(tuple(indices)) != 2:
        raise ValueError(f"indices must be a pair of ints, got {indices!r}")
    name = find_parameter(model, param_name)
    p = dict(model.named_parameters())[name]
    i0, i1 = (int(i) % p.numel() if -p.numel() <= int(i) < p.numel() else int(i) for i in indices)
    d1 = axis_direction(model, name, i0)
    d2 = axis_direction(model, name, i1)
    if i0 == i1:
        raise ValueError(f"indices must name two different elements, got {indices!r}")
    ls = plane(
        model, loss_fn, data, targets, d1=d1, d2=d2, alpha_range=alpha_range,
        num_points=num_points, train=train,
    )  # fmt: skip
    losses = ls.loss
    if ax is None:
        fig = plt.figure(figsize=(14, 5))
        ax1, ax2 = fig.add_subplot(121), fig.add_subplot(122, projection="3d")
    elif isinstance(ax, (tuple, list)):
        ax1, ax2 = ax
        fig = ax1.figure
    else:
        ax1, ax2, fig = ax, None, ax.figure
    # contour wants z[y, x]; losses is [i (x), j (y)], hence the transpose.
    cs = ax1.contour(ls.alphas, ls.betas, losses.T, levels=20, cmap="viridis")
    ax1.clabel(cs, inline=True, fontsize=8)
    ax1.plot(0, 0, "r*", markersize=15, label="Current parameters")
    ax1.set_xlabel(f"Perturbation α₁ (param[{indices[0]}])")
    ax1.set_ylabel(f"Perturbation α₂ (param[{indices[1]}])")
    ax1.set_title("Loss Contours")
    ax1.legend()
    ax1.grid(True, alpha=0.3)
    if ax2 is not None:
        xx, yy = np.meshgrid(ls.alphas, ls.betas, indexing="ij")
        surf = ax2.plot_surface(xx, yy, losses, cmap="viridis", alpha=0.8)
        ax2.set_xlabel("α₁")
        ax2.set_ylabel("α₂")
        ax2.set_zlabel("Loss")
        ax2.set_title("Loss Surface")
        fig.colorbar(surf, ax=ax2, shrink=0.5)
    fig.tight_layout()
    finish_figure(fig, path, show)
    return ls.alphas, losses


def visualize_loss_random_directions(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | BatchLoss | None,
    data: Any,
    targets: Any,
    num_directions: int = 5,
    alpha_range: Sequence[float] = (-1, 1),
    num_points: int = 100,
    *,
    normalization: str = "filter",
    ignore: str | None = "biasbn",
    seed: int | None = None,
    train: bool = False,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The loss along several random directions through the current weights.

    Args:
        model: The network.
        loss_fn: ``loss_fn(outputs, targets)``, a BatchLoss, or None (the model returns
            its loss); see :mod:`optiscope.batch_loss`.
        data: Inputs (tensor) or a DataLoader of batches in any layout (then
            ``targets=None``).
        targets: Labels.
        num_directions: How many directions (>= 1).
        alpha_range: ``(low, high)`` of the step size.
        num_points: Points per line (>= 2).
        normalization: ``"filter"`` (Li et al., default), ``"layer"``, ``"model"``, ``"none"``.
        ignore: ``"biasbn"`` leaves 1-d parameters out; None keeps them.
        seed: Seed for the directions (None: torch's global generator).
        train: Evaluate in train mode.
        ax: Axes to draw into.
        path: Save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        ``(alphas, losses)`` with ``losses[k]`` the curve along direction ``k``. (The
        guide returned nothing.)

    Raises:
        ValueError: ``num_directions < 1``, ``num_points < 2``, bad normalisation.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
        >>> X, y = torch.randn(100, 2), torch.rand(100, 1).round()
        >>> a, l = visualize_loss_random_directions(
        ...     m, nn.BCEWithLogitsLoss(), X, y, 3, num_points=5, seed=0)
        >>> l.shape
        (3, 5)
    """
    import matplotlib.pyplot as plt

    num_directions = check_int("num_directions", num_directions, low=1)
    dirs = random_directions(model, num_directions, normalization, ignore, seed=seed)
    kw = {"alpha_range": alpha_range, "num_points": num_points, "train": train}
    curves = [line(model, loss_fn, data, targets, direction=d, **kw) for d in dirs]
    fig, ax = plt.subplots(figsize=(12, 6)) if ax is None else (ax.figure, ax)
    for k, ls in enumerate(curves):
        ax.plot(ls.alphas, ls.loss, alpha=0.7, label=f"Direction {k + 1}")
    ax.axvline(x=0, color="r", linestyle="--", label="Current params", linewidth=2)
    ax.set_xlabel("Step size (α)")
    ax.set_ylabel("Loss")
    ax.set_title(f"Loss Landscape Along Random Directions ({normalization}-normalised)")
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    finish_figure(fig, path, show)
    return curves[0].alphas, np.stack([ls.loss for ls in curves])
