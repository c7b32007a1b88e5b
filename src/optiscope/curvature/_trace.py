"""Hutchinson's estimator of the Hessian trace, with its standard error."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from optiscope._internal.restore import preserved
from optiscope.curvature._common import check_int, check_seed, check_tol, make_generator
from optiscope.curvature._hvp import HessianOperator
from optiscope.curvature._lanczos import rademacher

__all__ = ["TraceResult", "hessian_trace"]

_MIN_SAMPLES = 10  # fewer probes give a standard error too rough to stop on


@dataclass
class TraceResult:
    """A Hutchinson estimate of ``tr(H)``.

    Attributes:
        trace: The mean of the probe values ``v^T H v``.
        stderr: Its standard error, ``std(samples, ddof=1) / sqrt(len(samples))`` (NaN for
            a single probe).
        samples: The ``v^T H v`` of every probe (float64 CPU tensor).
    """

    trace: float
    stderr: float
    samples: torch.Tensor

    def __repr__(self) -> str:
        n = self.samples.numel()
        return f"TraceResult(trace={self.trace:.6g}, stderr={self.stderr:.3g}, samples={n})"


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int | None = None,
    *,
    probe_batch: int = 10,
    params: Sequence[str] | None = None,
    max_batches: int | None = None,
) -> TraceResult:
    """Estimate ``tr(H)`` of the mean loss with Rademacher probes: ``E[v^T H v] = tr(H)``.

    Probes are evaluated ``probe_batch`` at a time with ``vmap`` (one pass over the data per
    block). Sampling stops at ``max_iter`` probes, or earlier once at least 10 probes give
    ``stderr <= tol * |trace|`` (checked once per block, the only host copy).

    Args:
        model: The network; restored bit-for-bit afterwards, also on error.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` with mean reduction.
        data: A tensor of inputs (with ``targets``) or a DataLoader of ``(inputs, targets)``.
        targets: Labels for tensor ``data``; None for a DataLoader.
        max_iter: Maximum number of probes, >= 1.
        tol: Relative standard error at which to stop early, > 0.
        seed: Seeds the probes; None draws fresh entropy. The global RNG is unused.
        probe_batch: Probes per vmapped pass, >= 1 (memory grows with it).
        params: Restrict to these parameter names (the trace of a diagonal block).
        max_batches: Use only the first this-many batches of a DataLoader.

    Returns:
        A :class:`TraceResult`.

    Raises:
        ValueError: ``max_iter``, ``tol`` or ``probe_batch`` out of range, no trainable
            parameters, a non-scalar loss or empty data.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> hessian_trace(model, torch.nn.functional.mse_loss, X, y, seed=0).trace
        5.0
    """
    max_iter = check_int("max_iter", max_iter)
    check_tol(tol)
    seed = check_seed(seed)
    probe_batch = check_int("probe_batch", probe_batch)
    op = HessianOperator(model, loss_fn, data, targets, params=params, max_batches=max_batches)
    generator = make_generator(op, seed)
    with preserved(model):
        samples = hutchinson_samples(op, max_iter, tol, probe_batch, generator).sum(dim=1)
    return _summary(samples)


def _summary(samples: torch.Tensor) -> TraceResult:
    n = samples.numel()
    mean = float(samples.mean())
    stderr = float(samples.std(correction=1)) / math.sqrt(n) if n > 1 else math.nan
    return TraceResult(trace=mean, stderr=stderr, samples=samples)


def hutchinson_samples(
    op: HessianOperator,
    max_iter: int,
    tol: float | None,
    probe_batch: int,
    generator: torch.Generator,
    groups: Sequence[Sequence[slice]] | None = None,
) -> torch.Tensor:
    """``v_g^T (H v)_g`` for each probe ``v`` and group ``g`` (slices of the flat vector).

    Every group's value is an unbiased estimate of the trace of its diagonal block
    (``E[v_g v_h^T] = 0`` for ``g != h``), so one full product per probe serves all
    layers at once. Returns a float64 CPU tensor ``(probes, groups)``.
    """
    if groups is None:
        groups = [[slice(0, op.numel)]]
    chunks: list[torch.Tensor] = []
    done = 0
    while done < max_iter:
        k = min(probe_batch, max_iter - done)
        V = rademacher((k, op.numel), generator, dtype=op.dtype, device=op.device)
        prod = V * (op.matmat(V) if k > 1 else op.matvec(V[0])[None])
        chunks.append(torch.stack([sum(prod[:, s].sum(dim=1) for s in g) for g in groups], dim=1))
        done += k
        if tol is not None and done >= _MIN_SAMPLES and done < max_iter:
            s = torch.cat(chunks).sum(dim=1).to("cpu", torch.float64)
            if float(s.std(correction=1)) / math.sqrt(done) <= tol * abs(float(s.mean())):
                break
    return torch.cat(chunks).to("cpu", torch.float64)
