"""Top Hessian eigenvalues and eigenvectors: Lanczos (default) or power iteration."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from optiscope._internal.checks import check_choice, check_positive_int, check_seed
from optiscope._internal.restore import preserved
from optiscope.curvature._common import check_tol, fix_sign, make_generator
from optiscope.curvature._hvp import Direction, HessianOperator, LossFn
from optiscope.curvature._lanczos import Lanczos

__all__ = ["EigenResult", "hessian_eigenvalues"]

Which = Literal["largest", "smallest", "magnitude"]
_WHICH = ("largest", "smallest", "magnitude")
_METHODS = ("lanczos", "power")


@dataclass
class EigenResult:
    """Eigenvalues of the loss Hessian with their eigenvectors.

    Attributes:
        eigenvalues: ``(top_k,)`` float64 CPU tensor, ordered by ``which`` (first = top).
        eigenvectors: One unit-norm direction per eigenvalue, a dict keyed by parameter
            name with the parameters' shapes (usable as a landscape direction).
        residuals: ``||H v - lambda v||`` of each pair (float64 CPU tensor).
        iterations: Hessian-vector products spent.
        converged: Whether every residual met ``tol`` (relative to its eigenvalue).
    """

    eigenvalues: torch.Tensor
    eigenvectors: list[Direction] = field(repr=False)
    residuals: torch.Tensor
    iterations: int
    converged: bool

    @property
    def top(self) -> float:
        """The first eigenvalue as a Python float (the sharpness when ``which="largest"``)."""
        return float(self.eigenvalues[0])


def hessian_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    top_k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int | None = None,
    *,
    which: Which = "largest",
    method: Literal["lanczos", "power"] = "lanczos",
    params: Sequence[str] | None = None,
    max_batches: int | None = None,
    v0: Direction | torch.Tensor | None = None,
) -> EigenResult:
    """The ``top_k`` extreme eigenvalues of the Hessian of the mean loss, with eigenvectors.

    Lanczos with full reorthogonalisation (the default) finds all ``top_k`` together and
    converges in far fewer Hessian-vector products than power iteration; it keeps
    ``max_iter`` vectors of the model's size. ``method="power"`` is power iteration with
    deflation against the eigenvectors already found (PyHessian's algorithm): memory for
    only ``top_k`` vectors, largest magnitude only, ``max_iter`` products per eigenvalue.

    Lanczos stops when every residual ``||H v - lambda v|| <= tol * |lambda|``; the
    eigenvalue error is at most the residual and about ``residual**2 / gap`` for an
    eigenvalue ``gap`` away from the others, so usually far below ``tol``. Power iteration
    stops on the relative change of the Rayleigh quotient (PyHessian's rule). The check
    copies the small tridiagonal (or one scalar) to the host once per iteration, never
    per batch.

    Args:
        model: The network; restored bit-for-bit afterwards, also on error.
        loss_fn: ``loss_fn(output, target) -> scalar`` (mean reduction), a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``).
        data: A tensor of inputs (with ``targets``) or an iterable (DataLoader, list) of
            batches in any layout ``loss_fn`` understands (``(x, y)``, ``(x1, x2, y)``,
            dicts); batches are weighted by their size.
        targets: Labels for tensor ``data``; None for a DataLoader.
        top_k: How many eigenvalues, ``1 <= top_k <=`` number of parameters.
        max_iter: Lanczos steps in total (at least ``top_k``, at most the number of
            parameters), or power iterations per eigenvalue; >= 1.
        tol: Relative tolerance, > 0.
        seed: Seeds the start vector; None draws fresh entropy. The global RNG is unused.
        which: ``"largest"`` (algebraic, the sharpness), ``"smallest"`` (most negative
            curvature) or ``"magnitude"``; power iteration supports only ``"magnitude"``.
        method: ``"lanczos"`` or ``"power"``.
        params: Restrict to these parameter names (a diagonal block of the Hessian).
        max_batches: Use only the first this-many batches of a DataLoader.
        v0: Start vector (a warm start): a dict keyed by parameter name like
            :attr:`EigenResult.eigenvectors`, or a flat tensor in the operator's order.
            Tracking sharpness over training, the last top eigenvector converges in a
            few products. None: a random start from ``seed``.

    Returns:
        An :class:`EigenResult`.

    Raises:
        ValueError: ``top_k``, ``max_iter``, ``tol``, ``which`` or ``method`` out of range,
            no trainable parameters, a non-scalar loss, empty data, or a ``v0`` of the
            wrong size, zero or not finite.
        TypeError: An argument of the wrong kind (a float count, a bool, a non-string
            choice), or a ``loss_fn`` that is neither callable, a BatchLoss nor None.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> r = hessian_eigenvalues(model, torch.nn.functional.mse_loss, X, y, top_k=2, seed=0)
        >>> [round(v, 4) for v in r.eigenvalues.tolist()]
        [4.0, 1.0]
    """
    top_k = check_positive_int("top_k", top_k)
    max_iter = check_positive_int("max_iter", max_iter)
    check_tol(tol)
    seed = check_seed(seed)
    check_choice("which", which, _WHICH)
    check_choice("method", method, _METHODS)
    if method == "power" and which != "magnitude":
        raise ValueError(
            f"method='power' finds the largest-magnitude eigenvalues only: pass "
            f"which='magnitude' (got which={which!r}) or use method='lanczos'"
        )
    op = HessianOperator(model, loss_fn, data, targets, params=params, max_batches=max_batches)
    if top_k > op.numel:
        raise ValueError(f"top_k must be <= the number of parameters ({op.numel}), got {top_k}")
    generator = make_generator(op, seed)
    start = None if v0 is None else _start_vector(op, v0)
    with preserved(model):
        if method == "lanczos":
            values, vectors, residuals, iters, ok = _lanczos_eigs(
                op, top_k, max_iter, tol, which, generator, start
            )
        else:
            values, vectors, residuals, iters, ok = _power_eigs(
                op, top_k, max_iter, tol, generator, start
            )
    vectors = fix_sign(vectors)
    return EigenResult(
        eigenvalues=values,
        eigenvectors=[{k: t.clone() for k, t in op.unflatten(v).items()} for v in vectors],
        residuals=residuals,
        iterations=iters,
        converged=ok,
    )


def _start_vector(op: HessianOperator, v0: Direction | torch.Tensor) -> torch.Tensor:
    if isinstance(v0, dict):
        vec = op.flatten(v0)
    elif isinstance(v0, torch.Tensor):
        if v0.shape != (op.numel,):
            raise ValueError(f"v0 must have shape ({op.numel},), got {tuple(v0.shape)}")
        vec = v0.to(device=op.device, dtype=op.dtype)
    else:
        raise TypeError(
            f"v0 must be a dict of tensors keyed by parameter name, a flat tensor or None, "
            f"got {type(v0).__name__}"
        )
    if not bool(torch.isfinite(vec).all()) or not bool(vec.abs().sum() > 0):
        raise ValueError("v0 must be a finite, non-zero vector")
    return vec.clone()


def _select(theta: torch.Tensor, top_k: int, which: str) -> torch.Tensor:
    if which == "largest":
        return torch.argsort(theta, descending=True)[:top_k]
    if which == "smallest":
        return torch.argsort(theta)[:top_k]
    return torch.argsort(theta.abs(), descending=True)[:top_k]


def _lanczos_eigs(
    op: HessianOperator,
    top_k: int,
    max_iter: int,
    tol: float,
    which: str,
    generator: torch.Generator,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, bool]:
    if start is None:
        start = torch.randn(op.numel, generator=generator, device=op.device, dtype=op.dtype)
    steps = min(max(max_iter, top_k), op.numel)
    lz = Lanczos(op.matvec, start, generator, steps)
    converged = False
    while lz.steps < steps:
        lz.step()
        if lz.steps < top_k:
            continue
        T, beta = lz.tridiagonal()
        theta, S = torch.linalg.eigh(T)
        idx = _select(theta, top_k, which)
        residuals = beta.abs() * S[-1, idx].abs()
        # Relative to each eigenvalue, floored by the spectral scale for near-zero ones.
        floor = 1e-3 * theta.abs().max()
        scale = torch.clamp(theta[idx].abs(), min=floor)
        converged = bool((residuals <= tol * scale).all()) and _frontier_converged(
            T, beta, which, tol, floor
        )
        if converged:
            break
    if lz.steps == op.numel:
        converged = True  # the Krylov space is the whole space: the Ritz pairs are exact
    Q = lz.basis()
    vectors = S[:, idx].T.to(device=Q.device, dtype=Q.dtype) @ Q
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    return theta[idx].clone(), vectors, residuals, lz.steps, converged


def _frontier_converged(
    T: torch.Tensor, beta: torch.Tensor, which: str, tol: float, floor: torch.Tensor
) -> bool:
    """Whether the block explored since the last restart has converged its extreme value.

    After a breakdown the earlier blocks hold exact eigenvalues, but the complement they
    leave may hold larger ones (or more copies of the same one: a single Krylov sequence
    sees each distinct eigenvalue once). Stopping is allowed only once the current block
    has pinned down its own extreme Ritz value.
    """
    if beta == 0:
        return False  # a restart just happened: the new block is still unexplored
    off = torch.diagonal(T, 1)
    zeros = (off == 0).nonzero()
    start = int(zeros[-1]) + 1 if zeros.numel() else 0
    theta, S = torch.linalg.eigh(T[start:, start:])
    j = int(_select(theta, 1, which)[0])
    scale = torch.clamp(theta[j].abs(), min=floor)
    return bool(beta.abs() * S[-1, j].abs() <= tol * scale)


def _power_eigs(
    op: HessianOperator,
    top_k: int,
    max_iter: int,
    tol: float,
    generator: torch.Generator,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, bool]:
    found: list[torch.Tensor] = []
    values, residuals = [], []
    iters, all_converged = 0, True
    for i in range(top_k):
        v = torch.randn(op.numel, generator=generator, device=op.device, dtype=op.dtype)
        if i == 0 and start is not None:
            v = start
        prev: float | None = None
        converged = False
        for _ in range(max_iter):
            for u in found:  # deflate: stay orthogonal to the eigenvectors already found
                v = v - torch.dot(u, v) * u
            v = v / torch.linalg.vector_norm(v)
            hv = op.matvec(v)
            iters += 1
            lam = torch.dot(v, hv)
            # One host copy per iteration decides the stop (a full pass over the data).
            lam_f, res_f = torch.stack([lam, torch.linalg.vector_norm(hv - lam * v)]).tolist()
            current = v
            if prev is not None and abs(lam_f - prev) <= tol * (abs(prev) + 1e-6):
                converged = True
                break
            prev = lam_f
            v = hv
        found.append(current)
        values.append(lam_f)
        residuals.append(res_f)
        all_converged &= converged
    return (
        torch.tensor(values, dtype=torch.float64),
        torch.stack(found),
        torch.tensor(residuals, dtype=torch.float64),
        iters,
        all_converged,
    )
