"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates", section 3.3).

Train for ``num_iter`` mini-batches while the learning rate grows from ``start_lr`` to
``end_lr`` (exponentially or linearly), record the loss, and suggest the learning rate
where the smoothed loss falls fastest per unit of log learning rate. The model, the
optimizer and every RNG are restored exactly afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.batches import _to
from optiscope._internal.figures import finish_figure
from optiscope._internal.restore import preserved

__all__ = ["LRFindResult", "lr_find"]


@dataclass(frozen=True)
class LRFindResult:
    """The outcome of :func:`lr_find`.

    Attributes:
        lrs: Learning rate of each iteration.
        losses: Debiased exponentially smoothed losses (what to plot and read).
        raw_losses: The per-batch losses.
        suggestion: Learning rate of the steepest descent of the smoothed loss per
            log-lr (None if too few points).
        suggestion_min: Learning rate at the minimum smoothed loss divided by 10.
        diverged: Whether the test stopped early because the loss exploded.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float | None
    suggestion_min: float | None
    diverged: bool = False
    mode: str = field(default="exp")

    def plot(
        self,
        ax: Any = None,
        *,
        skip_start: int = 0,
        skip_end: int = 0,
        path: str | None = None,
        show: bool = False,
    ) -> Any:
        """Smoothed loss against learning rate (log x axis), suggestions marked.

        Args:
            ax: Draw into this Axes (else a new figure).
            skip_start: Leave out this many first points.
            skip_end: Leave out this many last points.
            path: Save the figure here.
            show: Show the figure (pyplot ``show``).

        Returns:
            The matplotlib Figure.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 4.5))
        else:
            fig = ax.figure
        end = len(self.lrs) - skip_end
        ax.plot(self.lrs[skip_start:end], self.losses[skip_start:end], label="smoothed loss")
        if self.mode == "exp":
            ax.set_xscale("log")
        for lr, style, name in (
            (self.suggestion, "--", "steepest descent"),
            (self.suggestion_min, ":", "min / 10"),
        ):
            if lr is not None:
                ax.axvline(lr, linestyle=style, color="C3", label=f"{name}: {lr:.2e}")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        ax.set_title("LR range test")
        ax.legend()
        ax.grid(True, alpha=0.3)
        return finish_figure(fig, path, show)


def _check(
    start_lr: float, end_lr: float, num_iter: int, mode: str, smooth: float, diverge_th: float
) -> None:
    if not (isinstance(start_lr, (int, float)) and start_lr > 0 and math.isfinite(start_lr)):
        raise ValueError(f"start_lr must be a finite number > 0, got {start_lr!r}")
    if not (isinstance(end_lr, (int, float)) and math.isfinite(end_lr) and end_lr > start_lr):
        raise ValueError(f"end_lr must be finite and > start_lr={start_lr}, got {end_lr!r}")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 2:
        raise ValueError(f"num_iter must be an int >= 2, got {num_iter!r}")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth_f must be in [0, 1), got {smooth!r}")
    if not diverge_th > 1.0:
        raise ValueError(f"diverge_th must be > 1, got {diverge_th!r}")


def _cycle(loader: Iterable) -> Iterator[Any]:
    # Restart the loader when it runs out, so num_iter may exceed one epoch.
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("train_loader is empty: it yielded no batches")


def lr_find(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Any,
    train_loader: Iterable,
    start_lr: float = 1e-7,
    end_lr: float = 10,
    num_iter: int = 100,
    mode: str = "exp",
    *,
    smooth_f: float = 0.98,
    diverge_th: float = 5.0,
    device: str | torch.device | None = None,
) -> LRFindResult:
    """Run an LR range test and restore the model, optimizer and RNG states afterwards.

    Args:
        model: The model (trained in train mode during the test, then restored).
        optimizer: Its optimizer; every param group gets the test's learning rate.
        loss_fn: ``loss_fn(output, target) -> scalar``.
        train_loader: ``(inputs, targets)`` batches, cycled if shorter than ``num_iter``.
        start_lr: First learning rate (> 0).
        end_lr: Last learning rate (> start_lr).
        num_iter: Number of mini-batches (>= 2).
        mode: ``"exp"`` (geometric steps, Smith's choice) or ``"linear"``.
        smooth_f: Factor of the debiased exponential moving average of the loss.
        diverge_th: Stop once the smoothed loss exceeds ``diverge_th`` times its minimum
            (or becomes non-finite).
        device: Move batches here (default: where the model's parameters are).

    Returns:
        An :class:`LRFindResult`.

    Raises:
        ValueError: Bad ranges or an empty loader.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> m = torch.nn.Linear(4, 2)
        >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
        >>> opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> res = lr_find(m, opt, torch.nn.CrossEntropyLoss(), DataLoader(data, 16), num_iter=20)
        >>> len(res.lrs) <= 20 and opt.param_groups[0]["lr"] == 0.1
        True
    """
    _check(start_lr, end_lr, num_iter, mode, smooth_f, diverge_th)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    lrs, raw, smoothed = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    with preserved(model, optimizer, rng=True):
        model.train()
        batches = _cycle(train_loader)
        for i in range(num_iter):
            frac = i / (num_iter - 1)
            lr = (
                start_lr * (end_lr / start_lr) ** frac
                if mode == "exp"
                else (start_lr + (end_lr - start_lr) * frac)
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = next(batches)
            inputs, targets = _to(inputs, device), _to(targets, device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            # The test needs the value now to decide whether to stop: one read per batch.
            value = float(loss.detach())
            avg = smooth_f * avg + (1 - smooth_f) * value
            s = avg / (1 - smooth_f ** (i + 1))  # debiased, as in Adam
            lrs.append(lr)
            raw.append(value)
            smoothed.append(s)
            if not math.isfinite(s) or (i > 0 and s > diverge_th * best):
                diverged = True
                break
            best = min(best, s)
    steep, at_min = _suggest(lrs, smoothed, mode)
    return LRFindResult(lrs, smoothed, raw, steep, at_min, diverged, mode)


def _suggest(lrs: list[float], losses: list[float], mode: str) -> tuple[float | None, float | None]:
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    if not finite:
        return None, None
    i_min = min(finite, key=lambda i: losses[i])
    at_min = lrs[i_min] / 10.0
    # Steepest descent before the minimum (after it the loss is on its way up), leaving
    # out the first tenth, where the moving average has not settled yet.
    n = i_min + 1
    skip = min(10, len(losses) // 10)
    if n - skip < 3:
        return None, at_min
    x = np.log(lrs[:n]) if mode == "exp" else np.asarray(lrs[:n])
    slope = np.gradient(np.asarray(losses[:n]), x)[skip:]
    return float(lrs[skip + int(np.argmin(slope))]), at_min
