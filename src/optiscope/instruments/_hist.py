"""Histograms of per-sample gradient elements (Cockpit's GradHist1d and GradHist2d).

Cockpit's gradient histograms show the distribution of every element ``g_ij`` of every
per-sample gradient of a batch (``B x`` the number of parameters values): 1-D over the
gradient value, and 2-D over (gradient value, the parameter's value). A narrow 1-D peak
with heavy tails points at a few large per-sample gradients (outliers, a layer that
dominates); the 2-D view shows whether the large gradients sit on large or small weights.

Binning. Each axis has ``bins`` equal bins over ``[-r, r]``. By default ``r`` is the
largest finite magnitude of that axis's values at the measurement (``max |g_ij|`` for
gradients, ``max |w_j|`` for parameters), so nothing is clipped and ``r`` is a device
value (no host sync); with a fixed gradient range, values beyond it are counted in the
edge bins, as Cockpit does. Non-finite elements are not counted (the counts then sum to
less than ``B x numel``). Bin index: ``floor((x / r + 1) bins / 2)``, clamped to
``[0, bins - 1]`` (so ``x = r`` falls in the last bin); a value within rounding of a bin
edge may land on either side, as with any float histogram.

Cost: a few elementwise passes over the per-sample gradients (in slices of about
:data:`SLICE` elements, which stay in cache) and one ``index_add_`` per slice; on one CPU
thread about 2 ns per element for the 1-D histogram (57 M elements for 3C3D's 895 k
parameters at batch 64: ~0.1 s) and about as much again for the 2-D one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.checks import check_bool, check_int, check_positive
from optiscope.batch_loss import BatchLoss
from optiscope.instruments._grad_tests import per_sample_gradients

__all__ = [
    "HIST_KEYS",
    "SLICE",
    "HistSpec",
    "Histogram",
    "bin_gradients",
    "gradient_histograms",
    "hist_spec",
    "histogram_tensors",
]

HIST_KEYS = ("grad_hist", "grad_hist_2d")
SLICE = 1 << 20  # elements per slice of the per-sample gradients


@dataclass(frozen=True)
class HistSpec:
    """The bins of the histograms: ``bins`` (1-D), ``bins_2d`` (gradient, parameter),
    ``grad_range`` (``r`` of the gradient axis; None for ``max |g_ij|``), and whether each
    parameter tensor is also counted apart (``per_layer``, on the same bins)."""

    bins: int = 100
    bins_2d: tuple[int, int] = (40, 50)
    grad_range: float | None = None
    per_layer: bool = False


def hist_spec(bins: Any, bins_2d: Any, grad_range: Any, per_layer: Any = False) -> HistSpec:
    """A checked :class:`HistSpec` (the errors name ``hist_bins``, ``hist_bins_2d``,
    ``hist_range`` and ``hist_per_layer``, as :class:`~optiscope.instruments.Instruments`
    calls them).

    Raises:
        TypeError: A count that is not an int, ``bins_2d`` not a pair, or ``per_layer``
            not a bool.
        ValueError: A count below 1 or a range that is not a finite number > 0.
    """
    if not isinstance(bins_2d, (tuple, list)) or len(bins_2d) != 2:
        raise TypeError(
            f"hist_bins_2d must be a pair of ints (gradient, parameter), got {bins_2d!r}"
        )
    pair = (check_int("hist_bins_2d[0]", bins_2d[0], low=1),
            check_int("hist_bins_2d[1]", bins_2d[1], low=1))  # fmt: skip
    if grad_range is not None:
        grad_range = check_positive("hist_range", grad_range, allow_inf=False)
    per_layer = check_bool("hist_per_layer", per_layer)
    return HistSpec(check_int("hist_bins", bins, low=1), pair, grad_range, per_layer)


@dataclass(frozen=True)
class Histogram:
    """Counts and bin edges of one measured histogram.

    Attributes:
        counts: int64 ``(bins,)`` for a 1-D histogram; ``(gradient bins, parameter bins)`` for
            the 2-D one (rows: gradient value, columns: parameter value).
        edges: One ``bins + 1`` array of bin edges per axis, in the order of ``counts``'
            dimensions.
    """

    counts: np.ndarray
    edges: tuple[np.ndarray, ...]

    @property
    def total(self) -> int:
        """The number of values counted."""
        return int(self.counts.sum())


def _finite_abs_max(parts: list[torch.Tensor], buf: torch.Tensor) -> torch.Tensor:
    """``max |x|`` over the finite elements of ``parts`` (0-d, on the device; the smallest
    normal float when all are 0), through the float buffer ``buf`` (at least as large as
    each part)."""
    peaks = []
    for part in parts:
        b = buf.view(-1)[: part.numel()].view(part.shape)
        peaks.append(torch.abs(part, out=b).nan_to_num_(nan=0.0, posinf=0.0).amax())
    return torch.stack(peaks).amax().clamp_min(torch.finfo(buf.dtype).tiny)


def _bin_index(
    x: torch.Tensor, r: torch.Tensor | float, bins: int, buf: torch.Tensor, out: torch.Tensor
) -> None:
    """Bin indices of ``x`` on ``bins`` bins over ``[-r, r]`` into the int32 ``out``, through
    the float buffer ``buf`` (both shaped like ``x``): out-of-range and infinite values go
    to the edge bins, NaN to index ``bins`` (an overflow bin that is dropped)."""
    torch.mul(x, torch.div(bins / 2, r) if isinstance(r, torch.Tensor) else bins / 2 / r, out=buf)
    buf.add_(bins / 2).clamp_(0.0, bins - 0.5).nan_to_num_(nan=float(bins))
    out.copy_(buf)  # truncation = floor on [0, bins]


def _edges(r: torch.Tensor | float, bins: int, like: torch.Tensor) -> torch.Tensor:
    unit = torch.linspace(-1.0, 1.0, bins + 1, device=like.device, dtype=like.dtype)
    return unit * r


def bin_gradients(
    chunks: list[torch.Tensor],
    weights: torch.Tensor,
    want: tuple[str, ...],
    spec: HistSpec,
    layer_sizes: list[int] | None = None,
) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
    """The requested histograms of per-sample gradient elements, on the device.

    Args:
        chunks: ``(B_chunk, numel)`` flat per-sample gradients (rows: samples).
        weights: The flat ``(numel,)`` parameter values, in the same order.
        want: Keys from :data:`HIST_KEYS`.
        spec: The bins.
        layer_sizes: The number of elements of each parameter tensor, in flat order, to
            count each tensor's elements apart too (Cockpit's ``keep_individual``), on the
            same bins; None for the totals alone.

    Returns:
        Key -> ``(int64 counts, [edges per axis])``, all device tensors (no host sync); with
        ``layer_sizes`` also ``key + "/layers"`` -> ``((L, *counts.shape) counts, edges)``,
        whose sum over the first axis is the total.
    """
    bins, (nx, ny), grad_range = spec.bins, spec.bins_2d, spec.grad_range
    device, numel = weights.device, weights.numel()
    # Slices of ~SLICE elements through buffers allocated once: the passes stay in cache.
    rows = max(1, SLICE // max(1, numel))
    buf = torch.empty((rows, numel), dtype=weights.dtype, device=device)
    index = torch.empty((rows, numel), dtype=torch.int32, device=device)
    one = torch.ones((), dtype=torch.int64, device=device)
    parts = [part for chunk in chunks for part in chunk.split(rows)]
    r = _finite_abs_max(parts, buf) if grad_range is None else float(grad_range)
    sizes = {"grad_hist": bins, "grad_hist_2d": nx * ny}
    # Each tensor has its own block of size + 1 slots, the last its overflow (dropped):
    # one index_add_ counts every tensor apart, and the totals are the blocks' sum.
    n_layers = 1 if layer_sizes is None else len(layer_sizes)
    layer = None
    if layer_sizes is not None:
        ids = torch.arange(n_layers, dtype=torch.int32, device=device)
        repeats = torch.tensor(layer_sizes, device=device)
        layer = ids.repeat_interleave(repeats, output_size=numel)  # no size sync on CUDA
    offsets = {k: None if layer is None else layer * (sizes[k] + 1) for k in want}
    counts = {
        k: torch.zeros(n_layers * (sizes[k] + 1), dtype=torch.int64, device=device) for k in want
    }
    if "grad_hist_2d" in want:
        w_r = _finite_abs_max([weights], torch.empty_like(weights))
        column = torch.empty(numel, dtype=torch.int32, device=device)
        _bin_index(weights, w_r, ny, torch.empty_like(weights), column)
        # A NaN weight's column (ny) is pushed past the grid, into the dropped bin.
        column.masked_fill_(column == ny, nx * ny)
    for part in parts:
        n = part.shape[0]
        idx, flat = index[:n], index[:n].view(-1)
        for key in want:
            if key == "grad_hist":
                _bin_index(part, r, bins, buf[:n], idx)
            else:
                _bin_index(part, r, nx, buf[:n], idx)
                idx.mul_(ny).add_(column).clamp_max_(nx * ny)  # NaN gradients: past the grid
            if offsets[key] is not None:
                idx.add_(offsets[key])
            counts[key].index_add_(0, flat, one.expand(flat.numel()))
    out: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] = {}
    for key in want:
        blocks = counts[key].view(n_layers, sizes[key] + 1)[:, : sizes[key]]
        if key == "grad_hist":
            edges = [_edges(r, bins, weights)]
        else:
            edges = [_edges(r, nx, weights), _edges(w_r, ny, weights)]
        out[key] = (blocks.sum(0) if layer is not None else blocks[0], edges)
        if layer is not None:
            out[key + "/layers"] = (blocks, edges)
    return out


def gradient_histograms(
    model: nn.Module,
    batch_loss: BatchLoss,
    batch: Any,
    *,
    hist_bins: int = 100,
    hist_bins_2d: tuple[int, int] = (40, 50),
    hist_range: float | None = None,
    hist_per_layer: bool = False,
    names: list[str] | None = None,
    chunk_size: int | None = None,
) -> dict[str, Histogram]:
    """Cockpit's gradient histograms of ``batch`` at the model's weights, once.

    What :class:`~optiscope.instruments.Instruments` measures as ``"grad_hist"`` and
    ``"grad_hist_2d"``, for a one-off look outside a training loop: per-sample gradients
    by ``torch.func`` (in the model's current mode: pick eval mode so that the samples are
    independent), binned on the device, then copied to the host (the one sync).

    Args:
        model: The network (its state is read, not written).
        batch_loss: How a batch becomes a mean loss.
        batch: The samples.
        hist_bins: Bins of the 1-D histogram (>= 1).
        hist_bins_2d: ``(gradient, parameter)`` bins of the 2-D one (each >= 1).
        hist_range: The gradient range ``[-r, r]``, values beyond it counted in the edge
            bins; None: ``max |g_ij|``, so nothing is clipped (> 0).
        hist_per_layer: Also each parameter tensor's histograms, on the same bins
            (``"grad_hist/<name>"``, ``"grad_hist_2d/<name>"``; Cockpit's
            ``keep_individual``).
        names: Trainable parameters to use; None for all with ``requires_grad``.
        chunk_size: Samples per ``vmap`` chunk (None: the whole batch at once).

    Returns:
        ``{"grad_hist": Histogram, "grad_hist_2d": Histogram}`` (and the per-tensor ones).

    Raises:
        TypeError, ValueError: A bin count or range out of its range (named).

    Example:
        >>> import torch
        >>> from optiscope.batch_loss import as_batch_loss
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(3, 2)
        >>> X, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        >>> h = gradient_histograms(model, as_batch_loss(torch.nn.CrossEntropyLoss()), (X, y),
        ...                         hist_bins=10)
        >>> h["grad_hist"].total, h["grad_hist_2d"].counts.shape  # 8 samples x 8 parameters
        (64, (40, 50))
    """
    spec = hist_spec(hist_bins, hist_bins_2d, hist_range, hist_per_layer)
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    chunks = [g for g, _ in per_sample_gradients(model, batch_loss, batch, names, chunk_size)]
    return {
        key: Histogram(counts.cpu().numpy(), tuple(e.double().cpu().numpy() for e in edges))
        for key, counts, edges in histogram_tensors(model, chunks, HIST_KEYS, spec, names)
    }


def histogram_tensors(
    model: nn.Module,
    chunks: list[torch.Tensor],
    want: tuple[str, ...],
    spec: HistSpec,
    names: list[str],
) -> list[tuple[str, torch.Tensor, list[torch.Tensor]]]:
    """``(key, counts, edges)`` of each histogram :func:`bin_gradients` measures from the
    per-sample gradient ``chunks`` of ``model``'s parameters ``names``, counts shaped
    ``(bins,)`` or ``bins_2d``; the per-tensor ones (with ``spec.per_layer``) as
    ``"<key>/<parameter name>"``. Device tensors (no host sync)."""
    params = dict(model.named_parameters())
    weights = torch.cat([params[n].detach().reshape(-1) for n in names])
    sizes = [params[n].numel() for n in names] if spec.per_layer else None
    out = []
    for key, (counts, edges) in bin_gradients(chunks, weights, want, spec, sizes).items():
        base = key.removesuffix("/layers")
        shape = spec.bins_2d if base == "grad_hist_2d" else (spec.bins,)
        if key.endswith("/layers"):
            out += [(f"{base}/{n}", c.view(shape), edges) for n, c in zip(names, counts)]
        else:
            out.append((key, counts.view(shape), edges))
    return out
