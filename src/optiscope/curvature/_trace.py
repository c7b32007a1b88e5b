"""The Hessian trace by Hutch++ (default) or Hutchinson's estimator, with a standard error."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from optiscope._internal.checks import check_choice, check_positive_int, check_seed
from optiscope._internal.restore import preserved
from optiscope.curvature._common import check_tol, make_generator
from optiscope.curvature._hvp import HessianOperator, LossFn
from optiscope.curvature._lanczos import Lanczos, rademacher

__all__ = ["TraceResult", "hessian_trace"]

Method = Literal["auto", "krylov-hutch++", "hutch++", "hutchinson"]
_METHODS = ("auto", "krylov-hutch++", "hutch++", "hutchinson")
_MIN_SAMPLES = 10  # fewer probes give a standard error too rough to stop on
_MIN_HUTCHPP = 6  # "auto": a sketch of 2 and 2 residual probes (a standard error) at least


@dataclass
class TraceResult:
    """An estimate of ``tr(H)`` with its standard error.

    Attributes:
        trace: The estimate.
        stderr: Its standard error (NaN with fewer than two probe values to estimate it).
        samples: The Hutchinson probe values (float64 CPU tensor): ``v^T H v`` of every
            probe for ``"hutchinson"``; for ``"hutch++"`` the values
            ``g~^T H g~`` of the residual probes, ``trace = low_rank + samples.mean()``.
        method: ``"krylov-hutch++"``, ``"hutch++"`` or ``"hutchinson"``: the estimator
            that produced ``trace``.
        matvecs: Hessian-vector products spent.
        low_rank: ``tr(Q^T H Q)``, the exactly computed part of a Hutch++ estimate (0 for
            Hutchinson).
        sketch: ``k``, the number of sketch vectors (columns of ``Q``; 0 for Hutchinson).
    """

    trace: float
    stderr: float
    samples: torch.Tensor
    method: str = "hutchinson"
    matvecs: int = 0
    low_rank: float = 0.0
    sketch: int = 0

    def __repr__(self) -> str:
        return (
            f"TraceResult(trace={self.trace:.6g}, stderr={self.stderr:.3g}, "
            f"method={self.method!r}, matvecs={self.matvecs})"
        )


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int | None = None,
    *,
    method: Method = "auto",
    probe_batch: int = 10,
    params: Sequence[str] | None = None,
    max_batches: int | None = None,
) -> TraceResult:
    """Estimate ``tr(H)`` of the mean loss from ``max_iter`` Hessian-vector products.

    **Hutchinson** averages ``v^T H v`` over Rademacher probes ``v`` (``E[v v^T] = I``):
    standard error ``std(samples, ddof=1) / sqrt(N)``, variance ``2 (||H||_F^2 -
    sum_i H_ii^2) / N``.

    **Hutch++** (Meyer, Musco, Musco and Woodruff, 2021) spends a third of the products
    on a sketch ``Y = H S`` (``S``: ``k`` Rademacher columns), takes an orthonormal basis
    ``Q`` of ``Y``, computes the top of the spectrum exactly, ``tr(Q^T H Q)`` (``k``
    more products), and Hutchinson-estimates only what is left: with ``P = Q Q^T`` and
    residual probes ``g~_i = (I - P) g_i`` (``l`` products),

    .. math::

        \\hat t = \\mathrm{tr}(Q^T H Q) + \\frac{1}{l} \\sum_i \\tilde g_i^T H \\tilde g_i .

    Given ``Q`` the first term is fixed and the second is an ordinary Hutchinson
    estimate of ``tr((I-P) H (I-P)) = tr(H) - tr(Q^T H Q)``, so ``\\hat t`` is unbiased
    for every ``Q``, and ``Var(\\hat t) = E_Q[Var(\\hat t | Q)]`` (the conditional mean is
    ``tr(H)`` whatever ``Q``). The standard error is therefore that of the residual part
    alone, ``std(g~^T H g~, ddof=1) / sqrt(l)``: its square is unbiased for
    ``Var(\\hat t | Q)`` and hence for ``Var(\\hat t)``; it is *not* a standard error of a
    mean of ``max_iter`` iid values. When a few eigenvalues dominate ``||H||_F`` (as in
    trained networks) the residual's variance is far smaller, and Hutch++ reaches
    Hutchinson's standard error with several times fewer products.

    **Krylov-sketched Hutch++** (``"krylov-hutch++"``, after Chen and Hallman's
    Krylov-aware estimators, 2023) takes ``Q`` from ``k`` Lanczos steps (full
    reorthogonalisation) from one Rademacher start instead of ``H S``. A Krylov space of
    dimension ``k`` holds the extreme eigenvectors (both ends of the spectrum) far better
    than one sketch ``H S`` of the same size, and Lanczos yields ``tr(Q^T H Q) = sum_j
    alpha_j`` with no further products, so ``2 max_iter / 3`` products are left for the
    residual. ``Q`` depends only on the start vector, not on the residual probes, so the
    estimator and its standard error are exactly as above. Measured on a trained digits
    MLP and on the zoo ResNet it needed 3-4x fewer products than plain Hutch++ for the
    same standard error at 30-60 products.

    ``method="auto"`` (the default) uses Krylov-sketched Hutch++ when ``max_iter >= 6``
    (a sketch of two and residual probes enough for a standard error), Hutchinson below
    that; the result's :attr:`TraceResult.method` says which ran. Probes are evaluated
    ``probe_batch`` at a time (``HessianOperator.matmat``). Sampling (Hutchinson's
    probes, Hutch++'s residual probes) stops early once at least 10 of them give
    ``stderr <= tol * |trace|``, checked once per block (the only host copy).

    Args:
        model: The network; restored bit-for-bit afterwards, also on error.
        loss_fn: ``loss_fn(output, target) -> scalar`` (mean reduction), a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``).
        data: A tensor of inputs (with ``targets``) or an iterable (DataLoader, list) of
            batches in any layout ``loss_fn`` understands (``(x, y)``, ``(x1, x2, y)``,
            dicts); batches are weighted by their size.
        targets: Labels for tensor ``data``; None for a DataLoader.
        max_iter: Hessian-vector products to spend at most, >= 1 (>= 3 for Hutch++).
        tol: Relative standard error at which to stop early, > 0.
        seed: Seeds the probes; None draws fresh entropy. The global RNG is unused.
        method: ``"auto"``, ``"krylov-hutch++"``, ``"hutch++"`` or ``"hutchinson"``.
        probe_batch: Probes per pass over the data, >= 1 (memory grows with it).
        params: Restrict to these parameter names (the trace of a diagonal block).
        max_batches: Use only the first this-many batches of a DataLoader.

    Returns:
        A :class:`TraceResult`.

    Raises:
        ValueError: ``max_iter``, ``tol``, ``probe_batch`` or ``method`` out of range
            (a Hutch++ method with ``max_iter < 3``), no trainable parameters, a
            non-scalar loss or empty data.
        TypeError: An argument of the wrong kind (a float count, a non-string method),
            or a ``loss_fn`` that is neither callable, a BatchLoss nor None.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> r = hessian_trace(model, torch.nn.functional.mse_loss, X, y, seed=0)
        >>> round(r.trace, 4), r.method
        (5.0, 'krylov-hutch++')
    """
    max_iter = check_positive_int("max_iter", max_iter)
    check_tol(tol)
    seed = check_seed(seed)
    check_choice("method", method, _METHODS)
    probe_batch = check_positive_int("probe_batch", probe_batch)
    if method in ("hutch++", "krylov-hutch++") and max_iter < 3:
        raise ValueError(
            f"max_iter must be >= 3 for method={method!r} (a sketch, its products and a "
            f"residual probe), got {max_iter}"
        )
    if method == "auto":
        method = "krylov-hutch++" if max_iter >= _MIN_HUTCHPP else "hutchinson"
    op = HessianOperator(model, loss_fn, data, targets, params=params, max_batches=max_batches)
    generator = make_generator(op, seed)
    with preserved(model):
        if method == "hutchinson":
            samples = hutchinson_samples(op, max_iter, tol, probe_batch, generator).sum(dim=1)
            return _summary(samples, 0.0, "hutchinson", samples.numel())
        if method == "hutch++":
            return _hutchpp(op, max_iter, tol, probe_batch, generator)
        return _krylov_hutchpp(op, max_iter, tol, probe_batch, generator)


def _summary(
    samples: torch.Tensor, low_rank: float, method: str, matvecs: int, sketch: int = 0
) -> TraceResult:
    n = samples.numel()
    mean = float(samples.mean()) if n else 0.0
    stderr = float(samples.std(correction=1)) / math.sqrt(n) if n > 1 else math.nan
    return TraceResult(low_rank + mean, stderr, samples, method, matvecs, low_rank, sketch)


def _hutchpp(
    op: HessianOperator, max_iter: int, tol: float, probe_batch: int, generator: torch.Generator
) -> TraceResult:
    k = min(max_iter // 3, op.numel)
    S = rademacher((k, op.numel), generator, dtype=op.dtype, device=op.device)
    Y = _products(op, S, probe_batch)
    Q = torch.linalg.qr(Y.T).Q.T.contiguous()  # (k, n), orthonormal rows spanning H S
    low_rank = (Q * _products(op, Q, probe_batch)).sum()
    return _residual(
        op, Q, float(low_rank), 2 * k, "hutch++", max_iter, tol, probe_batch, generator
    )


def _krylov_hutchpp(
    op: HessianOperator, max_iter: int, tol: float, probe_batch: int, generator: torch.Generator
) -> TraceResult:
    k = min(max_iter // 3, op.numel)
    start = rademacher((op.numel,), generator, dtype=op.dtype, device=op.device)
    lz = Lanczos(op.matvec, start, generator, k)
    for _ in range(k):
        lz.step()
    low_rank = float(torch.stack(lz.alphas).sum())  # tr(Q^T H Q): Q's rows are orthonormal
    Q = lz.basis()
    return _residual(op, Q, low_rank, k, "krylov-hutch++", max_iter, tol, probe_batch, generator)


def _residual(
    op: HessianOperator,
    Q: torch.Tensor,
    low_rank: float,
    used: int,
    method: str,
    max_iter: int,
    tol: float,
    probe_batch: int,
    generator: torch.Generator,
) -> TraceResult:
    """Hutchinson on ``(I - Q^T Q) H (I - Q^T Q)`` with what is left of the budget."""
    k = Q.shape[0]
    if k == op.numel:  # Q spans the whole space: tr(Q^T H Q) is the trace itself
        empty = torch.zeros(0, dtype=torch.float64)
        return TraceResult(low_rank, 0.0, empty, method, used, low_rank, k)
    samples = hutchinson_samples(
        op, max_iter - used, tol, probe_batch, generator, project=Q, offset=low_rank
    ).sum(dim=1)
    return _summary(samples, low_rank, method, used + samples.numel(), k)


def _products(op: HessianOperator, V: torch.Tensor, probe_batch: int) -> torch.Tensor:
    return torch.cat([op.matmat(c) for c in V.split(probe_batch)])


def hutchinson_samples(
    op: HessianOperator,
    max_iter: int,
    tol: float | None,
    probe_batch: int,
    generator: torch.Generator,
    groups: Sequence[Sequence[slice]] | None = None,
    *,
    project: torch.Tensor | None = None,
    offset: float = 0.0,
) -> torch.Tensor:
    """``v_g^T (H v)_g`` for each probe ``v`` and group ``g`` (slices of the flat vector).

    Every group's value is an unbiased estimate of the trace of its diagonal block
    (``E[v_g v_h^T] = 0`` for ``g != h``), so one full product per probe serves all
    layers at once. With ``project`` (orthonormal rows ``Q``) each probe is first
    projected off them, ``v <- v - Q^T (Q v)`` (Hutch++'s residual); ``offset`` is added
    to the running mean for the early stop. Returns a float64 CPU tensor
    ``(probes, groups)``.
    """
    if groups is None:
        groups = [[slice(0, op.numel)]]
    chunks: list[torch.Tensor] = []
    done = 0
    while done < max_iter:
        k = min(probe_batch, max_iter - done)
        V = rademacher((k, op.numel), generator, dtype=op.dtype, device=op.device)
        if project is not None:
            V = V - (V @ project.T) @ project
        prod = V * op.matmat(V)
        chunks.append(torch.stack([sum(prod[:, s].sum(dim=1) for s in g) for g in groups], dim=1))
        done += k
        if tol is not None and done >= _MIN_SAMPLES and done < max_iter:
            s = torch.cat(chunks).sum(dim=1).to("cpu", torch.float64)
            stderr = float(s.std(correction=1)) / math.sqrt(done)
            if stderr <= tol * abs(float(s.mean()) + offset):
                break
    return torch.cat(chunks).to("cpu", torch.float64)
