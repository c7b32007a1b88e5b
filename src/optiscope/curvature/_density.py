"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ), and its plot."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from optiscope._internal.checks import check_int, check_positive, check_positive_int, check_seed
from optiscope._internal.figures import finish_figure
from optiscope._internal.restore import preserved
from optiscope.curvature._common import make_generator
from optiscope.curvature._hvp import HessianOperator, LossFn
from optiscope.curvature._lanczos import Lanczos, rademacher

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DensityResult", "hessian_density", "plot_density"]


@dataclass
class DensityResult:
    """A smoothed estimate of the Hessian's eigenvalue density.

    The density is ``mean_r sum_i w_ri N(t; theta_ri, sigma^2)``: one Gauss quadrature
    (Ritz values ``theta`` and weights ``w``, which sum to 1) per Rademacher probe ``r``,
    broadened by a Gaussian. It integrates to 1, and its mean ``sum w theta`` is the
    probes' ``v^T H v / n``, i.e. a Hutchinson estimate of ``tr(H) / n``.

    Attributes:
        grid: Eigenvalue grid (float64 CPU tensor).
        density: Density on the grid (float64 CPU tensor).
        ritz_values: ``(runs, m)`` Ritz values of each probe's Lanczos run.
        weights: ``(runs, m)`` their quadrature weights.
        sigma: The Gaussian broadening width.
        num_params: ``n``, the size of the Hessian.
    """

    grid: torch.Tensor = field(repr=False)
    density: torch.Tensor = field(repr=False)
    ritz_values: torch.Tensor = field(repr=False)
    weights: torch.Tensor = field(repr=False)
    sigma: float
    num_params: int

    @property
    def mean(self) -> float:
        """``sum w theta`` averaged over runs: an estimate of ``tr(H) / n``."""
        return float((self.weights * self.ritz_values).sum(dim=1).mean())

    @property
    def trace(self) -> float:
        """``n * mean``: the SLQ estimate of ``tr(H)``."""
        return self.mean * self.num_params

    def plot(self, **kwargs: Any) -> Figure:
        """Shortcut for :func:`plot_density` (same keyword arguments)."""
        return plot_density(self, **kwargs)


def hessian_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    num_iter: int = 100,
    num_runs: int = 1,
    seed: int | None = None,
    *,
    grid_size: int = 1000,
    sigma: float | None = None,
    params: Sequence[str] | None = None,
    max_batches: int | None = None,
) -> DensityResult:
    """Estimate the Hessian's eigenvalue density by stochastic Lanczos quadrature.

    Each run starts Lanczos (full reorthogonalisation) from a normalised Rademacher probe;
    the eigen-decomposition of its ``m x m`` tridiagonal gives Ritz values and weights
    (squared first components). No host copy happens inside a run.

    Args:
        model: The network; restored bit-for-bit afterwards, also on error.
        loss_fn: ``loss_fn(output, target) -> scalar`` (mean reduction), a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``).
        data: A tensor of inputs (with ``targets``) or an iterable (DataLoader, list) of
            batches in any layout ``loss_fn`` understands (``(x, y)``, ``(x1, x2, y)``,
            dicts); batches are weighted by their size.
        targets: Labels for tensor ``data``; None for a DataLoader.
        num_iter: Lanczos steps per run, >= 1 (capped at the number of parameters).
        num_runs: Independent probes, >= 1.
        seed: Seeds the probes; None draws fresh entropy. The global RNG is unused.
        grid_size: Points of the eigenvalue grid, >= 2.
        sigma: Gaussian broadening, > 0; None: 1% of the spread of the Ritz values.
        params: Restrict to these parameter names (the density of a diagonal block).
        max_batches: Use only the first this-many batches of a DataLoader.

    Returns:
        A :class:`DensityResult`.

    Raises:
        ValueError: ``num_iter``, ``num_runs``, ``grid_size`` or ``sigma`` out of range, no
            trainable parameters, a non-scalar loss or empty data.
        TypeError: An argument of the wrong kind (a float count, a bool, a non-string
            choice), or a ``loss_fn`` that is neither callable, a BatchLoss nor None.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> d = hessian_density(model, torch.nn.functional.mse_loss, X, y, seed=0)
        >>> round(d.trace, 4)
        5.0
    """
    num_iter = check_positive_int("num_iter", num_iter)
    num_runs = check_positive_int("num_runs", num_runs)
    grid_size = check_int("grid_size", grid_size, low=2)
    seed = check_seed(seed)
    if sigma is not None:
        sigma = check_positive("sigma", sigma, allow_inf=False)
    op = HessianOperator(model, loss_fn, data, targets, params=params, max_batches=max_batches)
    generator = make_generator(op, seed)
    steps = min(num_iter, op.numel)
    thetas, weights = [], []
    with preserved(model):
        for _ in range(num_runs):
            probe = rademacher((op.numel,), generator, dtype=op.dtype, device=op.device)
            lz = Lanczos(op.matvec, probe, generator, steps)
            for _ in range(steps):
                lz.step()
            T, _ = lz.tridiagonal()
            theta, S = torch.linalg.eigh(T)
            thetas.append(theta)
            weights.append(S[0] ** 2)
    ritz, w = torch.stack(thetas), torch.stack(weights)
    grid, dens, width = _broaden(ritz, w, grid_size, sigma)
    return DensityResult(grid, dens, ritz, w, width, op.numel)


def _broaden(
    ritz: torch.Tensor, weights: torch.Tensor, grid_size: int, sigma: float | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    lo, hi = float(ritz.min()), float(ritz.max())
    spread = max(hi - lo, 1e-3 * max(abs(lo), abs(hi)), 1e-12)
    width = 0.01 * spread if sigma is None else float(sigma)
    # Pad by 5 sigma so the Gaussians at the extremes integrate to 1 on the grid.
    grid = torch.linspace(lo - 5 * width, hi + 5 * width, grid_size, dtype=torch.float64)
    z = (grid[:, None, None] - ritz[None]) / width
    kernel = torch.exp(-0.5 * z**2) / (width * (2 * torch.pi) ** 0.5)
    dens = (kernel * weights[None]).sum(dim=2).mean(dim=1)
    return grid, dens, width


def plot_density(
    result: DensityResult,
    *,
    log: bool = True,
    ax: Axes | None = None,
    path: str | Path | None = None,
    show: bool = False,
) -> Figure:
    """Plot the eigenvalue density (log scale by default: the bulk near 0 dominates).

    Args:
        result: From :func:`hessian_density`.
        log: Log-scale the density axis (floored at 1e-10 of the peak, as zeros cannot
            be drawn).
        ax: Draw into these axes; None makes a new figure.
        path: Also save the figure here.
        show: Show the figure (pyplot ``show``).

    Returns:
        The matplotlib Figure.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 1); X, y = torch.randn(8, 2), torch.randn(8, 1)
        >>> fig = plot_density(hessian_density(m, torch.nn.functional.mse_loss, X, y, seed=0))
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    x, y = result.grid.numpy(), result.density.numpy()
    if log:
        y = y.clip(min=max(float(y.max()), 1e-300) * 1e-10)
        ax.semilogy(x, y)
    else:
        ax.plot(x, y)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian eigenvalue density (n={result.num_params}, sigma={result.sigma:.3g})")
    return finish_figure(fig, path, show)
