"""Top Hessian eigenvectors as landscape directions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from optiscope._internal.checks import check_positive_int
from optiscope.curvature._eigen import hessian_eigenvalues
from optiscope.curvature._hvp import Direction, LossFn

__all__ = ["hessian_directions"]


def hessian_directions(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    num_directions: int = 2,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int | None = None,
    *,
    which: Literal["largest", "smallest", "magnitude"] = "largest",
    max_batches: int | None = None,
) -> list[Direction]:
    """The top Hessian eigenvectors as directions for ``landscape.line`` / ``landscape.plane``.

    Drawing the loss along the sharpest directions (rather than random ones) shows the
    curvature the eigenvalues measure. Each direction is a dict keyed by *every* parameter
    name of the model, with the parameter's shape, dtype and device; frozen parameters get
    zeros. The directions are orthonormal over all parameters together, with a
    deterministic sign (largest entry positive); the landscape uses them as given, so the
    loss along ``d_i`` curves like ``lambda_i * alpha**2 / 2`` near ``alpha = 0``.

    Args:
        model: The network; restored bit-for-bit afterwards, also on error.
        loss_fn: ``loss_fn(output, target) -> scalar`` (mean reduction), a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``).
        data: A tensor of inputs (with ``targets``) or an iterable (DataLoader, list) of
            batches in any layout ``loss_fn`` understands (``(x, y)``, ``(x1, x2, y)``,
            dicts); batches are weighted by their size.
        targets: Labels for tensor ``data``; None for a DataLoader.
        num_directions: How many eigenvectors, >= 1 (2 for a plane).
        max_iter: Lanczos steps, >= 1.
        tol: Relative residual tolerance, > 0.
        seed: Seeds the Lanczos start vector.
        which: ``"largest"``, ``"smallest"`` or ``"magnitude"`` eigenvalues.
        max_batches: Use only the first this-many batches of a DataLoader.

    Returns:
        ``num_directions`` dicts, first = sharpest.

    Raises:
        ValueError: Arguments out of range (as for :func:`hessian_eigenvalues`).
        TypeError: An argument of the wrong kind (a float count, a bool, a non-string
            choice), or a ``loss_fn`` that is neither callable, a BatchLoss nor None.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> d1, d2 = hessian_directions(model, torch.nn.functional.mse_loss, X, y, seed=0)
        >>> d1["weight"].abs().round(decimals=4)
        tensor([[0., 1.]])
    """
    num_directions = check_positive_int("num_directions", num_directions)
    result = hessian_eigenvalues(
        model,
        loss_fn,
        data,
        targets,
        top_k=num_directions,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        which=which,
        max_batches=max_batches,
    )
    directions = []
    for vec in result.eigenvectors:
        d = {}
        for name, p in model.named_parameters():
            t = vec.get(name)
            d[name] = torch.zeros_like(p.detach()) if t is None else t.to(p.dtype).clone()
        directions.append(d)
    return directions
