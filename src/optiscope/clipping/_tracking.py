"""The guide's training loop that tracks gradient norms, and its plot, fixed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from optiscope._internal.batches import iter_batches
from optiscope._internal.checks import check_positive_int
from optiscope._internal.figures import finish_figure
from optiscope.clipping._clippers import NoClip, NormClip

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_gradient_norms", "train_with_gradient_tracking"]


def train_with_gradient_tracking(
    model: nn.Module,
    train_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    epochs: int = 10,
    max_grad_norm: float | None = 1.0,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> tuple[list[float], list[float]]:
    """Train while recording the pre-clip gradient norm and the loss of every step.

    The guide's loop, fixed: ``F`` is imported, the norm is the one ``clip_grad_norm_``
    returns (measured once, not twice), the model is put in train mode, batches follow the
    model's device, and the per-step values stay on the device until the end of each epoch,
    when they are copied to the host in one transfer (the guide synchronises twice a step).

    Args:
        model: The model to train (its parameters' device is used for the batches).
        train_loader: An iterable of ``(inputs, targets)`` batches, e.g. a DataLoader.
        optimizer: The optimizer over ``model``'s parameters.
        epochs: Passes over ``train_loader``, ``>= 1``.
        max_grad_norm: Global-norm clipping limit in ``(0, inf]``; None only measures.
        loss_fn: ``loss_fn(outputs, targets)``; cross-entropy like the guide by default.

    Returns:
        ``(grad_norms, losses)``: one float per optimizer step each.

    Raises:
        ValueError: ``epochs < 1``, a bad ``max_grad_norm``, or an empty loader.
        TypeError: ``model`` is not a Module or ``epochs`` is not an int.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
        >>> model = torch.nn.Linear(4, 3)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> norms, losses = train_with_gradient_tracking(model, DataLoader(data, 16), opt, 2)
        >>> len(norms), len(losses)
        (8, 8)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    epochs = check_positive_int("epochs", epochs)
    clipper = NoClip() if max_grad_norm is None else NormClip(max_grad_norm)
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else None
    grad_norms: list[float] = []
    losses: list[float] = []
    model.train()
    for _ in range(epochs):
        step_norms, step_losses = [], []
        for data, target in iter_batches(train_loader, device=device):
            optimizer.zero_grad()
            loss = loss_fn(model(data), target)
            loss.backward()
            step_norms.append(clipper(params).total_norm)
            step_losses.append(loss.detach())
            optimizer.step()
        # The one host sync of the epoch.
        host = torch.stack(
            [torch.stack([n.float() for n in step_norms]), torch.stack(step_losses).float()]
        ).cpu()
        grad_norms.extend(host[0].tolist())
        losses.extend(host[1].tolist())
    return grad_norms, losses


def _as_series(name: str, values: Any) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().reshape(-1).tolist()
    try:
        series = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers") from None
    return series


def plot_gradient_norms(
    grad_norms: Sequence[float] | torch.Tensor,
    losses: Sequence[float] | torch.Tensor,
    *,
    max_grad_norm: float | None = None,
    ax: Sequence[Axes] | None = None,
    path: str | None = None,
    show: bool = False,
) -> Figure:
    """Plot gradient norms (log scale) above losses, per step; the guide's figure.

    Args:
        grad_norms: Gradient norm per step (list, array or tensor).
        losses: Loss per step.
        max_grad_norm: Draw the clipping limit as a dashed line (None: no line).
        ax: Two Axes to draw into (norms, losses); None makes a new 2x1 figure.
        path: Save the figure here as well.
        show: Show the figure (pyplot ``show``) (off by default, so scripts and tests never block).

    Returns:
        The matplotlib Figure.

    Raises:
        TypeError: Values that are not numbers, or ``ax`` that is not two Axes.

    Example:
        >>> fig = plot_gradient_norms([1.0, 0.5, 2.0], [2.3, 2.0, 1.7])
        >>> [a.get_ylabel() for a in fig.axes]
        ['Gradient Norm', 'Loss']
    """
    norms = _as_series("grad_norms", grad_norms)
    loss_values = _as_series("losses", losses)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8))
    else:
        if len(ax) != 2:
            raise TypeError("ax must be a pair of Axes (gradient norms, losses)")
        ax1, ax2 = ax
        fig = ax1.figure
    ax1.plot(norms, alpha=0.6, label="gradient norm")
    if max_grad_norm is not None:
        ax1.axhline(max_grad_norm, color="r", linestyle="--", label="clip limit")
        ax1.legend()
    ax1.set_xlabel("Step")
    ax1.set_ylabel("Gradient Norm")
    ax1.set_title("Gradient Norms During Training")
    if any(v > 0 for v in norms):
        ax1.set_yscale("log")
    ax1.grid(True, alpha=0.3)
    ax2.plot(loss_values, alpha=0.6)
    ax2.set_xlabel("Step")
    ax2.set_ylabel("Loss")
    ax2.set_title("Loss During Training")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    return finish_figure(fig, path, show)
