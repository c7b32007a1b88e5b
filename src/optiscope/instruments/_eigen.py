"""The probe batch's Hessian as a reusable operator, and a warm-started Lanczos on it.

Both are built for one job: a few products at each sharpness measurement, many times
over a training run. So everything that does not change between measurements is made
once per tracker (parameter names, sizes, shapes, the Lanczos basis buffer), and each
measurement pays only for its graph and its products:

- :class:`ProbeHessian` builds the probe loss's gradient graph with plain autograd
  (``torch.autograd.grad(..., create_graph=True)`` on detached copies of the
  parameters, through ``torch.func.functional_call``) and answers each ``H v`` with one
  double backward. The products are bit-identical to
  :class:`~optiscope.curvature.HessianOperator`'s ``vjp(grad(loss))`` (same kernels);
  the graph costs about a third less to build (no ``torch.func`` transform levels).
  ``.grad`` and the model's parameters are never written (``autograd.grad`` does not
  accumulate, and the differentiated leaves are fresh).
- :func:`top_eigenpair` runs Lanczos with full reorthogonalisation in a preallocated
  ``(max_iter, n)`` basis, copying ``alpha, beta`` to the host once per step (its
  stopping test). Unlike the shared :class:`~optiscope.curvature._lanczos.Lanczos` it
  draws no restart direction at every step: a breakdown ends the run (see there).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from optiscope.batch_loss import BatchLoss
from optiscope.curvature._kernels import double_backward_kernels

__all__ = ["GAP_SAFETY", "Eigenpair", "ProbeHessian", "top_eigenpair"]

# The gap-based error estimate must be this far inside the tolerance (see top_eigenpair).
GAP_SAFETY = 3.0


class ProbeHessian:
    """``v -> H v`` of ``batch_loss`` on one batch at the model's current weights.

    Call :meth:`build` at each measurement (evaluates the model in eval mode, puts its
    modes back), then :meth:`matvec` as often as needed; :meth:`clear` drops the graph.

    Args:
        model: The network.
        batch_loss: How the batch becomes a scalar loss.
        names: The parameters to differentiate with respect to (the vector's order).
    """

    def __init__(self, model: nn.Module, batch_loss: BatchLoss, names: list[str]) -> None:
        self.model = model
        self.batch_loss = batch_loss
        self.names = names
        params = dict(model.named_parameters())
        self.sizes = [params[n].numel() for n in names]
        self.shapes = [params[n].shape for n in names]
        self.numel = sum(self.sizes)
        self.dtype = params[names[0]].dtype
        self.device = params[names[0]].device
        self._primals: list[torch.Tensor] = []
        self._grads: list[torch.Tensor] = []
        self._used: list[int] = []

    def build(self, batch: Any) -> None:
        """One forward and backward (with its graph kept) on ``batch`` at the current weights."""
        model, wanted = self.model, set(self.names)
        state = {n: p.detach() for n, p in model.named_parameters() if n not in wanted}
        state.update({n: b.detach() for n, b in model.named_buffers()})
        params = dict(model.named_parameters())
        primals = [params[n].detach().requires_grad_() for n in self.names]
        state.update(zip(self.names, primals))
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with double_backward_kernels(), torch.enable_grad():
                loss = self.batch_loss.evaluate(model, batch, state=state).loss
                grads = torch.autograd.grad(loss, primals, create_graph=True, allow_unused=True)
        finally:
            for m, training in modes:
                m.training = training
        # Gradients that do not depend on the parameters (none, or constant) have a zero
        # Hessian block row: only the others are differentiated again.
        self._used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self._grads = [grads[i] for i in self._used]
        self._primals = primals

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``H @ vector`` for a flat vector of length :attr:`numel` (after :meth:`build`)."""
        if not self._grads:
            return torch.zeros_like(vector)
        views = vector.split(self.sizes)
        outs = torch.autograd.grad(
            self._grads,
            self._primals,
            [views[i].view(self.shapes[i]) for i in self._used],
            retain_graph=True,
            allow_unused=True,
        )
        return torch.cat([
            torch.zeros(s, dtype=vector.dtype, device=vector.device) if o is None else o.reshape(-1)
            for o, s in zip(outs, self.sizes)
        ])  # fmt: skip

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H`` applied to each row of ``vectors`` (one double backward per row)."""
        return torch.stack([self.matvec(v) for v in vectors])

    def clear(self) -> None:
        """Drop the graph (its activations) until the next :meth:`build`."""
        self._primals, self._grads = [], []


class Basis:
    """A ``(rows, n)`` buffer for Lanczos vectors, allocated once and reused."""

    def __init__(self) -> None:
        self.Q: torch.Tensor | None = None

    def get(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        Q = self.Q
        if Q is None or Q.shape != (rows, like.numel()) or Q.dtype != like.dtype:
            Q = self.Q = like.new_empty((rows, like.numel()))
        elif Q.device != like.device:
            Q = self.Q = Q.to(like.device)
        return Q


class Eigenpair(NamedTuple):
    """What :func:`top_eigenpair` found, and the Krylov basis it left in its buffer."""

    value: float
    vector: torch.Tensor  # unit norm
    residual: float  # ||A v - value v||
    products: int  # matvecs spent, = the rows of the basis buffer now holding Q
    ritz_trace: float  # tr(Q^T A Q) = sum of the Lanczos alphas


def top_eigenpair(
    matvec: Any,
    start: torch.Tensor,
    max_iter: int,
    tol: float,
    basis: Basis,
) -> Eigenpair:
    """Largest eigenvalue of a symmetric operator by Lanczos, with its unit eigenvector.

    The orthonormal Lanczos vectors stay in ``basis.Q[:products]`` until the next run
    (a Krylov sketch for :mod:`~optiscope.instruments._trace`).

    Stops at the first step where one of three tests holds, each relative to the top
    Ritz value ``theta_1``:

    - its residual ``r = |beta_m s_m|`` is at most ``tol`` (``r`` bounds the distance
      to an eigenvalue);
    - its change from the previous step is at most ``tol`` (PyHessian's and Cockpit's
      rule, on Lanczos' monotone Ritz values; it stops early on clustered top
      eigenvalues, whose residuals fall slowly while the value is already settled);
    - the error estimate ``r^2 / (theta_1 - theta_2)`` is at most ``tol / 3`` (the
      standard a-posteriori estimate of a Ritz value's error, with the gap taken from the
      second Ritz value; ``theta_2`` underestimates the second eigenvalue while the run
      is short, which makes the estimate optimistic, hence the factor 3). With a warm
      start it often stops one product before the change rule could.

    A breakdown (``beta`` ~ 0: the Krylov space is invariant) has a zero residual, so it
    stops there too: its top Ritz value is then an exact eigenvalue, the top one unless
    the start vector has no component along the top eigenvector.
    """
    n = start.numel()
    steps = min(max_iter, n)
    Q = basis.get(steps, start)
    Q[0] = start / torch.linalg.vector_norm(start)
    thr = 100 * torch.finfo(start.dtype).eps
    alphas: list[float] = []
    betas: list[float] = []
    prev: float | None = None
    while True:
        k = len(alphas)
        q = Q[k]
        w = matvec(q)
        alpha = torch.dot(q, w)
        w_norm = torch.linalg.vector_norm(w)
        # Full reorthogonalisation against every vector so far, twice ("twice is enough").
        done = Q[: k + 1]
        for _ in range(2):
            w.addmv_(done.T, done @ w, alpha=-1)  # w -= Q^T (Q w), in place
        beta = torch.linalg.vector_norm(w)
        a, b, wn = torch.stack([alpha, beta, w_norm]).tolist()  # the step's host copy
        alphas.append(a)
        breakdown = b <= thr * wn
        betas.append(0.0 if breakdown else b)
        T = np.diag(alphas)
        if k:
            T += np.diag(betas[:k], 1) + np.diag(betas[:k], -1)
        theta, S = np.linalg.eigh(T)  # float64, on the host: a few microseconds
        top, residual = float(theta[-1]), abs(betas[-1] * float(S[-1, -1]))
        scale = max(abs(top), 1e-30)
        settled = prev is not None and abs(top - prev) <= tol * scale
        gap = top - float(theta[-2]) if k else 0.0
        estimated = gap > 0 and residual * residual / gap <= tol * scale / GAP_SAFETY
        if k + 1 >= steps or residual <= tol * scale or settled or estimated:
            break
        prev = top
        Q[k + 1] = w / beta
    m = len(alphas)
    s = torch.from_numpy(S[:, -1].copy()).to(device=Q.device, dtype=Q.dtype)
    vector = s @ Q[:m]
    return Eigenpair(top, vector / torch.linalg.vector_norm(vector), residual, m, sum(alphas))
