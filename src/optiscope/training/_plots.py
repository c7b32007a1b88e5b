"""The guide's training-curve figure, returned instead of shown and saved by force."""

from __future__ import annotations

import math
import os
from typing import Any

from optiscope._internal.figures import finish_figure

__all__ = ["plot_training_curves"]


def plot_training_curves(
    trainer: Any, path: str | os.PathLike | None = None, *, show: bool = False
) -> Any:
    """Losses per epoch, learning rate and gradient norm per step, losses on a log scale.

    Args:
        trainer: Anything with ``train_losses``, ``val_losses``, ``learning_rates`` and
            ``grad_norms`` lists (an AdvancedTrainer).
        path: Save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        The matplotlib Figure (2x2 axes).

    Example:
        >>> from types import SimpleNamespace
        >>> t = SimpleNamespace(train_losses=[1.0, 0.5], val_losses=[1.1, 0.7],
        ...                     learning_rates=[0.1, 0.05], grad_norms=[2.0, 1.0])
        >>> len(plot_training_curves(t).axes)
        4
    """
    import matplotlib.pyplot as plt

    train_losses, val_losses = list(trainer.train_losses), list(trainer.val_losses)
    lrs, grad_norms = list(trainer.learning_rates), list(trainer.grad_norms)
    epochs = list(range(1, len(train_losses) + 1))
    val_epochs = list(range(1, len(val_losses) + 1))
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    ax = axes[0, 0]
    ax.plot(epochs, train_losses, label="Train", linewidth=2)
    ax.plot(val_epochs, val_losses, label="Validation", linewidth=2)
    ax.set(xlabel="Epoch", ylabel="Loss", title="Training and Validation Loss")
    ax.legend()
    ax.grid(True, alpha=0.3)
    ax = axes[0, 1]
    ax.plot(lrs, linewidth=1)
    ax.set(xlabel="Optimizer step", ylabel="Learning Rate", title="Learning Rate Schedule")
    ax.grid(True, alpha=0.3)
    ax = axes[1, 0]
    norms = [g for g in grad_norms if math.isfinite(g)]
    if norms:
        ax.plot(grad_norms, alpha=0.6)
        if min(norms) > 0:
            ax.set_yscale("log")
    ax.set(xlabel="Optimizer step", ylabel="Gradient Norm (pre-clip)", title="Gradient Norms")
    ax.grid(True, alpha=0.3)
    ax = axes[1, 1]
    positive = all(v > 0 for v in train_losses + val_losses if math.isfinite(v))
    ax.plot(epochs, train_losses, label="Train", linewidth=2)
    ax.plot(val_epochs, val_losses, label="Validation", linewidth=2)
    if positive and (train_losses or val_losses):
        ax.set_yscale("log")
    ax.set(xlabel="Epoch", ylabel="Loss (log scale)", title="Loss (Log Scale)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in (axes[0, 0], axes[1, 1]):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.tight_layout()
    return finish_figure(fig, path, show)
