"""Sharpness (top Hessian eigenvalue) on a fixed probe batch, warm-started between steps.

Each measurement builds the probe loss's gradient graph once
(:class:`~optiscope.instruments._eigen.ProbeHessian`, so every product is one double
backward) and runs Lanczos with full reorthogonalisation, in a basis buffer reused
across measurements, from the previous measurement's top eigenvector.
Between nearby steps the eigenvector moves little, so the stop (the top Ritz value
settles, its residual ``||H v - lambda v||`` falls below ``tol * lambda``, or its
estimated error below a third of that) comes after a few products instead of the
~10-20 a random start needs; :attr:`SharpnessTracker.hvp_counts` records the products spent.

Accuracy of the default ``tol=1e-3`` (the stop tests are in
:func:`~optiscope.instruments._eigen.top_eigenpair`), measured on warm-started Lanczos
traces against a 60-step Lanczos from a random start (SGD with momentum 0.9, probe batch
of 64, a measurement every 16 steps; products per measurement, with the residual and
change tests alone in brackets):

- digits MLP, lr 0.01, 59 measurements: 3.20 products (3.71); relative error median
  3e-5, above 1e-3 twice early in training, while the top eigenvector still turned fast
  (at most 4.3e-3, as with the change test alone);
- digits MLP, lr 0.05: 2.56 products (3.27), error at most 2.7e-4;
- 3C3D (``benchmarks/bench_instruments.py``), lr 0.01, 23 measurements while the
  sharpness rose from 3 to 380: 3.91 products (4.26), error at most 2.8e-4.

Without the factor 3 on the error estimate (``r^2 / gap <= tol``) the MLP at lr 0.01
takes about 0.3 products fewer but ends above 1e-3 in 8 of the 59 measurements (at most
4.7e-3), so the factor stays.

The preconditioned sharpness of Adam-family optimizers is the top eigenvalue of
``P^-1 H`` with ``P = diag(sqrt(v_hat) + eps)`` the preconditioner Adam divides by
(``v_hat`` bias-corrected as Adam applies it). It is computed as the top eigenvalue of
the symmetric ``P^-1/2 H P^-1/2``, which has the same spectrum.

Stability thresholds (Cohen et al. 2021, 2022): gradient descent with learning rate
``eta`` is unstable along directions with curvature above ``2 / eta``; heavy-ball
momentum ``beta`` moves it to ``(2 + 2 beta) / eta``, Nesterov momentum to
``(2 + 2 beta) / (eta (1 + 2 beta))``; Adam's preconditioned threshold is
``(2 + 2 beta1) / ((1 - beta1) eta)`` (38 / eta at beta1 = 0.9).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optiscope.instruments._eigen import Basis, Eigenpair, ProbeHessian, top_eigenpair

__all__ = [
    "SharpnessTracker",
    "adam_preconditioner",
    "preconditioned_threshold",
    "sharpness_threshold",
]


def _lr(group: dict[str, Any]) -> float:
    lr = group["lr"]
    return float(lr.detach()) if isinstance(lr, torch.Tensor) else float(lr)


def sharpness_threshold(optimizer: torch.optim.Optimizer) -> float:
    """The curvature above which the first param group's update diverges (2/lr for GD).

    Example:
        >>> import torch
        >>> p = [torch.nn.Parameter(torch.zeros(1))]
        >>> sharpness_threshold(torch.optim.SGD(p, lr=0.1))
        20.0
        >>> round(sharpness_threshold(torch.optim.SGD(p, lr=0.1, momentum=0.9)), 6)
        38.0
    """
    group = optimizer.param_groups[0]
    lr = _lr(group)
    beta = (
        float(group.get("momentum", 0.0) or 0.0) if isinstance(optimizer, torch.optim.SGD) else 0.0
    )
    if lr == 0:
        return float("inf")
    if group.get("nesterov", False):
        return (2 + 2 * beta) / (lr * (1 + 2 * beta))
    return (2 + 2 * beta) / lr


def preconditioned_threshold(optimizer: torch.optim.Optimizer) -> float:
    """``(2 + 2 beta1) / ((1 - beta1) lr)`` of the first param group (Cohen et al. 2022).

    Example:
        >>> import torch
        >>> p = [torch.nn.Parameter(torch.zeros(1))]
        >>> round(preconditioned_threshold(torch.optim.Adam(p, lr=0.01)), 6)
        3800.0
    """
    group = optimizer.param_groups[0]
    beta1 = float(group["betas"][0])
    lr = _lr(group)
    return float("inf") if lr == 0 else (2 + 2 * beta1) / ((1 - beta1) * lr)


@torch.no_grad()
def adam_preconditioner(
    optimizer: torch.optim.Optimizer, params: list[nn.Parameter]
) -> torch.Tensor | None:
    """``P^-1/2`` as one flat vector over ``params``; None before the first step.

    ``P = sqrt(v_t / (1 - beta2^t)) + eps`` per coordinate, the denominator of Adam's and
    AdamW's update (``max_exp_avg_sq`` with ``amsgrad``).
    """
    owner = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    parts = []
    for p in params:
        state = optimizer.state.get(p, {})
        group = owner.get(id(p))
        if group is None or "exp_avg_sq" not in state:
            return None
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        step = state["step"]
        step = step.to(torch.float64) if isinstance(step, torch.Tensor) else float(step)
        bc2 = 1 - group["betas"][1] ** step
        denom = v.sqrt() / torch.as_tensor(bc2, device=v.device).sqrt().to(v.dtype)
        parts.append(denom.add_(group["eps"]).rsqrt().reshape(-1))
    return torch.cat(parts)


class SharpnessTracker:
    """Top eigenvalue of ``H`` (or ``P^-1/2 H P^-1/2``) on one probe batch, warm-started.

    Args:
        max_iter: Lanczos steps per measurement at most.
        tol: Relative residual tolerance of the stop.
        seed: Seeds the random first start vector.
    """

    def __init__(self, max_iter: int, tol: float, seed: int) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.vector: torch.Tensor | None = None  # the last top eigenvector (warm start)
        self.hvp_counts: list[int] = []
        self.last: Eigenpair | None = None
        self._basis = Basis()  # the Lanczos vectors, reused by every measurement

    def measure(self, op: ProbeHessian, scale: torch.Tensor | None = None) -> tuple[float, float]:
        """``(top eigenvalue, relative residual)`` of the built operator ``op``.

        Costs one double backward per Hessian-vector product; copies the small
        tridiagonal to the host once per Lanczos step (so this is a host sync, at its own
        interval).
        """
        if self.generator is None:
            self.generator = torch.Generator(device=op.device)
            self.generator.manual_seed(self.seed)
        matvec = op.matvec
        if scale is not None:
            d = scale.to(op.device, op.dtype)

            def matvec(v: torch.Tensor) -> torch.Tensor:  # D H D, same spectrum as P^-1 H
                return d * op.matvec(d * v)

        start = self.vector
        if start is None:
            start = torch.randn(
                op.numel, generator=self.generator, device=op.device, dtype=op.dtype
            )
        found = top_eigenpair(matvec, start, self.max_iter, self.tol, self._basis)
        self.vector, self.last = found.vector, found
        self.hvp_counts.append(found.products)
        return found.value, found.residual / max(abs(found.value), 1e-30)

    def sketch(self) -> tuple[torch.Tensor, float]:
        """The last run's orthonormal Lanczos vectors (rows) and ``tr(Q^T H Q)``."""
        assert self.last is not None and self._basis.Q is not None
        return self._basis.Q[: self.last.products], self.last.ritz_trace

    def state_dict(self) -> dict[str, Any]:
        return {
            "vector": self.vector,
            "generator": None if self.generator is None else self.generator.get_state(),
            "hvp_counts": list(self.hvp_counts),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.vector = state["vector"]
        self.hvp_counts = list(state["hvp_counts"])
        if state["generator"] is not None:
            self.generator = torch.Generator(device=device)
            self.generator.set_state(state["generator"])
