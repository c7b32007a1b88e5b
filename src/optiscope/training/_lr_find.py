"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates", section 3.3).

Train for ``num_iter`` mini-batches while the learning rate grows from ``start_lr`` to
``end_lr`` (exponentially or linearly), record the loss, and read a learning rate off the
curve. The model, the optimizer and every RNG are restored exactly afterwards.

The curve is read after the test, so it is smoothed without lag: a Gaussian kernel
centred on each point (zero phase), not the running average other finders read, whose
delay of ``beta / (1 - beta)`` points (49 for 0.98) moves every feature of the curve to
higher rates. Three rules read it (``result.suggestions``):

* ``"steepest"`` (the default): where the smoothed loss falls fastest per unit of
  log learning rate, before its minimum, at the pace of lr_find's defaults (see below);
* ``"valley"``: fastai's rule, the middle of the longest descending run of the curve
  (leaving out the first tenth and the last 5 points, as fastai does);
* ``"min/10"``: the rate at the minimum of the smoothed loss, divided by 10.

``benchmarks/bench_lr_find.py`` checks them against sweeps of fixed learning rates.

The loss at a step of the test reflects the training done by the steps before it, about
``r / (r - 1)`` steps' worth at the current rate when the rate grows by ``r`` per step. A
slower test (more steps per decade) has done more training by a given rate, so its
curve falls at lower rates: at 200 steps instead of 100 over the same range the steepest
point sits about 2x lower. The steepest rule therefore reads the rate at the pace of
lr_find's defaults (1e-7 to 10 in 100 steps): it multiplies the steepest point by
``(1 - 1 / r_default) / (1 - 1 / r)``, 1 for the defaults, 1.13 for 1e-6 to 10 in 100
steps, 1.95 for 200 steps. Linear tests are read as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.batches import walk_batches
from optiscope._internal.checks import check_choice, check_int, check_positive, check_real
from optiscope._internal.figures import finish_figure
from optiscope._internal.restore import preserved
from optiscope.batch_loss import as_batch_loss

__all__ = ["LRFindResult", "RULES", "lr_find"]

RULES = ("steepest", "valley", "min/10")
# Kernel width of the smoothing, as a share of num_iter (3 points of a 100-point test).
SMOOTH_SHARE = 0.03
# Per-step growth of the rate in lr_find's defaults (1e-7 to 10 in 100 steps).
REFERENCE_STEP = 10 ** (8 / 99)
# Loss values are copied to the host (for the divergence check) every this many steps.
CHECK_EVERY = 10


@dataclass(frozen=True)
class LRFindResult:
    """The outcome of :func:`lr_find`.

    Attributes:
        lrs: Learning rate of each iteration.
        losses: The smoothed losses (zero-phase Gaussian smoothing; what the rules read).
        raw_losses: The per-batch losses.
        suggestion: The learning rate the rule ``rule`` reads off the curve (None if the
            test recorded fewer than 3 finite losses).
        suggestion_min: Learning rate at the minimum smoothed loss divided by 10.
        diverged: Whether the test stopped early because the loss exploded.
        mode: ``"exp"`` or ``"linear"``, how the rate grew.
        rule: The rule that produced ``suggestion``: ``"steepest"``, ``"valley"`` or
            ``"min/10"`` (``"min/10"`` also when the asked-for rule found no descent).
        suggestions: Every rule's value, by name.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float | None
    suggestion_min: float | None
    diverged: bool = False
    mode: str = field(default="exp")
    rule: str | None = None
    suggestions: dict[str, float | None] = field(default_factory=dict)

    def plot(
        self,
        ax: Any = None,
        *,
        skip_start: int = 0,
        skip_end: int = 0,
        path: str | None = None,
        show: bool = False,
    ) -> Any:
        """Raw and smoothed loss against learning rate, the suggestion marked and named.

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
        lrs = self.lrs[skip_start:end]
        ax.plot(lrs, self.raw_losses[skip_start:end], color="C0", alpha=0.25, label="loss")
        ax.plot(lrs, self.losses[skip_start:end], color="C0", label="smoothed loss")
        if self.mode == "exp":
            ax.set_xscale("log")
        styles = {"steepest": "--", "valley": "-.", "min/10": ":"}
        for name, lr in self.suggestions.items():
            if lr is not None and name != self.rule:
                ax.axvline(lr, linestyle=styles.get(name, ":"), color="0.6", lw=1,
                           label=f"{name}: {lr:.2e}")  # fmt: skip
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="C3", lw=2,
                       label=f"suggestion ({self.rule}): {self.suggestion:.2e}")  # fmt: skip
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        finite = [v for v in self.losses[skip_start:end] if math.isfinite(v)]
        if finite:  # up to the start level: the exploding last points would squash the curve
            low = min(finite)
            high = max(finite[: finite.index(low) + 1])
            pad = (high - low) or abs(high) or 1.0
            ax.set_ylim(low - 0.1 * pad, high + 0.4 * pad)
        title = "LR range test" + (f", suggestion by the {self.rule} rule" if self.rule else "")
        ax.set_title(title)
        ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
        return finish_figure(fig, path, show)


def _check(
    model: Any,
    optimizer: Any,
    start_lr: Any,
    end_lr: Any,
    num_iter: Any,
    mode: Any,
    smooth_f: Any,
    diverge_th: Any,
    rule: Any,
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    check_positive("start_lr", start_lr, allow_inf=False)
    check_positive("end_lr", end_lr, allow_inf=False)
    if not end_lr > start_lr:
        raise ValueError(f"end_lr must be > start_lr={start_lr!r}, got {end_lr!r}")
    check_int("num_iter", num_iter, low=2)
    check_choice("mode", mode, ("exp", "linear"))
    check_real("smooth_f", smooth_f, low=0.0, high=1.0, high_open=True)
    check_real("diverge_th", diverge_th, low=1.0, low_open=True)
    check_choice("rule", rule, RULES)


def _cycle(train_loader: Iterable, device: torch.device) -> Iterator[Any]:
    # Restart the loader when it runs out, so num_iter may exceed one epoch.
    if iter(train_loader) is train_loader:
        yield from walk_batches(train_loader, device=device)
        raise ValueError(
            "train_loader ran out of batches and is an iterator that cannot restart; "
            "pass a DataLoader or a list of batches, or a smaller num_iter"
        )
    while True:
        yield from walk_batches(train_loader, device=device)


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
    rule: str = "steepest",
) -> LRFindResult:
    """Run an LR range test and restore the model, optimizer and RNG states afterwards.

    Args:
        model: The model (trained in train mode during the test, then restored).
        optimizer: Its optimizer; every param group gets the test's learning rate.
        loss_fn: ``loss_fn(output, target) -> scalar``, a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``, e.g. a Hugging Face model on dict batches).
        train_loader: Batches in any layout ``loss_fn`` understands (``(x, y)``,
            ``(x1, ..., xn, y)``, dicts), cycled if shorter than ``num_iter``.
        start_lr: First learning rate (> 0).
        end_lr: Last learning rate (> start_lr).
        num_iter: Number of mini-batches (>= 2).
        mode: ``"exp"`` (geometric steps, Smith's choice) or ``"linear"``.
        smooth_f: Factor in [0, 1) of the running (debiased exponential) average of the
            loss that decides, during the test, when it has diverged.
        diverge_th: Stop once that average exceeds ``diverge_th`` (> 1) times its
            minimum, or becomes non-finite.
        device: Move batches here (default: where the model's parameters are).
        rule: Which rule gives ``suggestion``: ``"steepest"``, ``"valley"`` or
            ``"min/10"`` (all are in ``suggestions``).

    Returns:
        An :class:`LRFindResult`.

    Raises:
        TypeError: ``model``, ``optimizer`` or ``loss_fn`` of the wrong kind, or an
            argument of the wrong type.
        ValueError: Bad ranges, an unknown mode or rule, or an empty loader.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> _ = torch.manual_seed(0)
        >>> m = torch.nn.Linear(4, 2)
        >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
        >>> opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> res = lr_find(m, opt, torch.nn.CrossEntropyLoss(), DataLoader(data, 16), num_iter=20)
        >>> len(res.lrs) <= 20 and opt.param_groups[0]["lr"] == 0.1, res.rule in res.suggestions
        (True, True)
    """
    _check(model, optimizer, start_lr, end_lr, num_iter, mode, smooth_f, diverge_th, rule)
    batch_loss = as_batch_loss(loss_fn)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    lrs = _schedule(float(start_lr), float(end_lr), int(num_iter), mode)
    pending: list[torch.Tensor] = []
    raw: list[float] = []
    avg, best, stop = 0.0, math.inf, None
    with preserved(model, optimizer, rng=True):
        model.train()
        batches = _cycle(train_loader, torch.device(device))
        for i, lr in enumerate(lrs):
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(model, next(batches))
            loss.backward()
            optimizer.step()
            pending.append(loss.detach())
            if len(pending) < CHECK_EVERY and i < len(lrs) - 1:
                continue
            # One copy to the host per CHECK_EVERY steps; the record is cut at the first
            # diverged point, so it is the same as checking after every step.
            for value in torch.stack(pending).float().cpu().tolist():
                raw.append(value)
                avg = smooth_f * avg + (1 - smooth_f) * value
                s = avg / (1 - smooth_f ** len(raw))  # debiased, as in Adam
                if not math.isfinite(s) or (len(raw) > 1 and s > diverge_th * best):
                    stop = len(raw)
                    break
                best = min(best, s)
            pending.clear()
            if stop is not None:
                break
    lrs = lrs[: len(raw)]
    smoothed = smooth_losses(raw, sigma=max(1.0, SMOOTH_SHARE * num_iter))
    suggestions = suggest(lrs, smoothed, mode)
    chosen = rule if suggestions[rule] is not None else "min/10"
    suggestion = suggestions[chosen]
    return LRFindResult(
        lrs=lrs,
        losses=smoothed,
        raw_losses=raw,
        suggestion=suggestion,
        suggestion_min=suggestions["min/10"],
        diverged=stop is not None,
        mode=mode,
        rule=chosen if suggestion is not None else None,
        suggestions=suggestions,
    )


def _schedule(start: float, end: float, n: int, mode: str) -> list[float]:
    fracs = [i / (n - 1) for i in range(n)]
    if mode == "exp":
        return [start * (end / start) ** f for f in fracs]
    return [start + (end - start) * f for f in fracs]


def smooth_losses(losses: list[float], sigma: float) -> list[float]:
    """Zero-phase Gaussian smoothing (kernel std ``sigma`` points, renormalised at the ends).

    Non-finite points (a diverged last batch) are left out of every average and come back
    as NaN.
    """
    v = np.asarray(losses, dtype=float)
    ok = np.isfinite(v)
    idx = np.arange(len(v))
    w = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2) * ok[None, :]
    total = w.sum(axis=1)
    out = np.where(total > 0, (w @ np.where(ok, v, 0.0)) / np.where(total > 0, total, 1), np.nan)
    return np.where(ok, out, np.nan).tolist()


def suggest(lrs: list[float], smoothed: list[float], mode: str) -> dict[str, float | None]:
    """Every rule's learning rate for the smoothed curve ``smoothed`` at rates ``lrs``."""
    out: dict[str, float | None] = dict.fromkeys(RULES)
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(finite) < 3:
        return out
    lr = np.asarray([lrs[i] for i in finite])
    loss = np.asarray([smoothed[i] for i in finite])
    i_min = int(np.argmin(loss))
    out["min/10"] = float(lr[i_min] / 10.0)
    if i_min >= 2:
        # Steepest descent before the minimum (after it the loss is on its way up).
        x = np.log(lr[: i_min + 1]) if mode == "exp" else lr[: i_min + 1]
        slope = np.gradient(loss[: i_min + 1], x)
        if slope.min() < 0:
            steepest = float(lr[int(np.argmin(slope))])
            if mode == "exp":
                step = lrs[1] / lrs[0]
                steepest *= (1 - 1 / REFERENCE_STEP) / (1 - 1 / step)
            out["steepest"] = min(max(steepest, lrs[0]), lrs[-1])
    # fastai reads the valley without the first tenth and the last 5 points.
    lo, hi = len(loss) // 10, len(loss) - 5
    if hi - lo >= 3:
        out["valley"] = float(lr[lo + _valley(loss[lo:hi])])
    else:
        out["valley"] = float(lr[_valley(loss)])
    return out


def _valley(loss: np.ndarray) -> int:
    """fastai's valley: the longest decreasing subsequence, then half way along it.

    As fastai computes it (``fastai.callback.schedule.valley``): the run "starts" one
    point before its first, and the index is ``start + int(d / 3) + int(d / 6)`` with
    ``d = end - start``.
    """
    n = len(loss)
    lds = np.ones(n, dtype=int)
    end = 0
    for i in range(1, n):
        before = lds[:i][loss[:i] > loss[i]]
        if before.size:
            lds[i] = before.max() + 1
        if lds[i] > lds[end]:
            end = i
    start = max(0, end - int(lds[end]))
    third = (end - start) / 3
    return min(n - 1, start + int(third) + int(third / 2))
