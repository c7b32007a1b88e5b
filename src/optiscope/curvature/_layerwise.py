"""Per-layer curvature: top eigenvalue and trace of each layer's diagonal Hessian block."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from optiscope._internal.checks import check_choice, check_int, check_positive_int, check_seed
from optiscope._internal.restore import preserved
from optiscope.curvature._common import check_tol, make_generator
from optiscope.curvature._eigen import _lanczos_eigs
from optiscope.curvature._hvp import HessianOperator, LossFn
from optiscope.curvature._trace import hutchinson_samples

__all__ = ["LayerCurvature", "layerwise_curvature"]


@dataclass
class LayerCurvature:
    """Curvature of one layer's diagonal block of the Hessian.

    Attributes:
        params: The parameter names in the block.
        num_params: Size of the block.
        top_eigenvalue: Its largest eigenvalue (Lanczos).
        trace: Hutchinson estimate of its trace.
        trace_stderr: Standard error of ``trace``.
        converged: Whether the eigenvalue met ``tol``.
    """

    params: list[str]
    num_params: int
    top_eigenvalue: float
    trace: float
    trace_stderr: float
    converged: bool


def _groups(model: nn.Module, group_by: str) -> dict[str, list[str]]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if group_by == "parameter":
        return {n: [n] for n in names}
    groups: dict[str, list[str]] = {}
    for n in names:
        owner = n.rpartition(".")[0]  # "features.0.weight" -> "features.0"
        groups.setdefault(owner or n, []).append(n)
    return groups


def layerwise_curvature(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int | None = None,
    *,
    group_by: Literal["module", "parameter"] = "module",
    trace_samples: int = 100,
    probe_batch: int = 10,
    max_batches: int | None = None,
) -> dict[str, LayerCurvature]:
    """Top eigenvalue and trace of each layer's diagonal block of the Hessian.

    The eigenvalue of a block is found by Lanczos on that block alone (the other
    parameters held fixed). The traces of all blocks come from the same full-model
    Rademacher probes: ``v_g^T (H v)_g`` is unbiased for ``tr(H_gg)`` because probe entries
    of different blocks are independent, so one product per probe serves every layer.

    Args:
        model: The network; restored bit-for-bit afterwards, also on error.
        loss_fn: ``loss_fn(output, target) -> scalar`` (mean reduction), a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``).
        data: A tensor of inputs (with ``targets``) or an iterable (DataLoader, list) of
            batches in any layout ``loss_fn`` understands (``(x, y)``, ``(x1, x2, y)``,
            dicts); batches are weighted by their size.
        targets: Labels for tensor ``data``; None for a DataLoader.
        max_iter: Lanczos steps per layer, >= 1.
        tol: Relative residual tolerance of the eigenvalues, > 0.
        seed: Seeds the Lanczos starts and the probes.
        group_by: ``"module"`` (a layer's weight and bias together, keyed by the module
            name) or ``"parameter"`` (one block per parameter tensor).
        trace_samples: Rademacher probes for the traces, >= 2.
        probe_batch: Probes per vmapped pass, >= 1.
        max_batches: Use only the first this-many batches of a DataLoader.

    Returns:
        ``{layer name: LayerCurvature}`` in the model's parameter order.

    Raises:
        ValueError: Arguments out of range, no trainable parameters, a non-scalar loss.
        TypeError: An argument of the wrong kind (a float count, a bool, a non-string
            choice), or a ``loss_fn`` that is neither callable, a BatchLoss nor None.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> X, y = torch.randn(16, 3), torch.randn(16, 1)
        >>> sorted(layerwise_curvature(m, torch.nn.functional.mse_loss, X, y, seed=0))
        ['0', '2']
    """
    max_iter = check_positive_int("max_iter", max_iter)
    check_tol(tol)
    seed = check_seed(seed)
    trace_samples = check_int("trace_samples", trace_samples, low=2)
    probe_batch = check_positive_int("probe_batch", probe_batch)
    check_choice("group_by", group_by, ("module", "parameter"))
    full = HessianOperator(model, loss_fn, data, targets, max_batches=max_batches)
    groups = _groups(model, group_by)
    generator = make_generator(full, seed)
    # Flat-vector slices of each group (the operator orders parameters like the model).
    offsets, start = {}, 0
    for name, size in zip(full.names, full.sizes):
        offsets[name] = (start, start + size)
        start += size
    slices = [[slice(*offsets[n]) for n in ns] for ns in groups.values()]
    out: dict[str, LayerCurvature] = {}
    with preserved(model):
        samples = hutchinson_samples(full, trace_samples, None, probe_batch, generator, slices)
        for (layer, names), column in zip(groups.items(), samples.T):
            op = HessianOperator(
                model, loss_fn, data, targets, params=names, max_batches=max_batches
            )
            values, _, _, _, ok = _lanczos_eigs(op, 1, max_iter, tol, "largest", generator)
            out[layer] = LayerCurvature(
                params=names,
                num_params=op.numel,
                top_eigenvalue=float(values[0]),
                trace=float(column.mean()),
                trace_stderr=float(column.std(correction=1)) / math.sqrt(column.numel()),
                converged=ok,
            )
    return out
