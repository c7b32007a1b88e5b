"""Per-sample gradient histograms: optiscope's ``grad_hist`` + ``grad_hist_2d`` against
Cockpit's GradHist1d + GradHist2d (BackPACK's BatchGrad), per measurement.

Two networks at batch 64, SGD: Cockpit's benchmark network 3C3D (895 k parameters, so
57 M per-sample gradient elements) on CIFAR-10-sized synthetic data, and the digits MLP
(51 k parameters). Each library measures both histograms at every step; the cost of a
measurement is the time per step over the plain loop's (optiscope: per-sample gradients
of the probe batch by ``torch.func`` plus the binning; Cockpit: BackPACK's per-sample
gradients inside the training backward plus its binning), each at its defaults
(optiscope: range ``max |g|``; Cockpit: fixed ranges). A second row times the binning
alone on the same per-sample gradients: optiscope's ``bin_gradients`` against
Cockpit's per-parameter transforms (clamp + ``torch.histc``; clamp + its
``histogram2d``), and a third optiscope's with each parameter tensor counted apart too
(``hist_per_layer``). Medians over ``--repeats`` (5) rounds, loops interleaved; one thread.

Run: ``python benchmarks/bench_histograms.py`` (about two minutes).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _probe_loops import batches_for, cockpit_loop, extra_ms, loop, row, start, timed  # noqa: E402
from bench_instruments import c3d  # noqa: E402

from optiscope.batch_loss import as_batch_loss  # noqa: E402
from optiscope.instruments._grad_tests import per_sample_gradients  # noqa: E402
from optiscope.instruments._hist import HistSpec, bin_gradients  # noqa: E402
from optiscope.models import digits_mlp  # noqa: E402

BOTH = ("grad_hist", "grad_hist_2d")


def _cockpit_hists(schedule) -> list:
    from cockpit.quantities import GradHist1d, GradHist2d

    return [GradHist1d(schedule), GradHist2d(schedule)]


def _binning(build: Callable[[], nn.Module], batch) -> tuple[Callable, Callable, Callable | None]:
    """Optiscope's binning (totals; totals and each tensor apart) and Cockpit's alone, on
    the same per-sample gradients. Cockpit bins each parameter apart in any case (its
    ``keep_individual`` only keeps what it computes), so one Cockpit number serves both."""
    torch.manual_seed(0)
    model = build().eval()
    names = [n for n, _ in model.named_parameters()]
    grads = [g for g, _ in per_sample_gradients(model, as_batch_loss(F.cross_entropy), batch,
                                                 names)]  # fmt: skip
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    spec = HistSpec()

    sizes = [p.numel() for p in model.parameters()]

    def ours() -> None:
        bin_gradients(grads, weights, BOTH, spec)

    def ours_per_tensor() -> None:
        bin_gradients(grads, weights, BOTH, spec, sizes)

    try:
        from cockpit.quantities.utils_hists import histogram2d
    except ImportError:
        return ours, ours_per_tensor, None
    flat, B = torch.cat(grads), len(grads[0])
    params = list(model.parameters())
    bounds = list(itertools.accumulate([p.numel() for p in params], initial=0))
    per_param = [(flat[:, a:b], p.detach().reshape(-1)) for (a, b), p
                 in zip(zip(bounds, bounds[1:]), params)]  # fmt: skip
    (x_lo, x_hi), (w_lo, w_hi), (nx, ny) = (-1.0, 1.0), (-2.0, 2.0), (40, 50)

    def theirs() -> None:  # GradHist1d and GradHist2d's transforms, per parameter
        for g, w in per_param:
            torch.histc(g.clamp(-2.0, 2.0), bins=100, min=-2.0, max=2.0)
            gx = g.clamp(x_lo + (x_hi - x_lo) / nx / 2, x_hi - (x_hi - x_lo) / nx / 2)
            wy = w.clamp(w_lo + (w_hi - w_lo) / ny / 2, w_hi - (w_hi - w_lo) / ny / 2)
            data = torch.stack((gx.flatten(), wy.unsqueeze(0).expand(B, -1).flatten()))
            histogram2d(data, bins=(nx, ny), range=((x_lo, x_hi), (w_lo, w_hi)))

    return ours, ours_per_tensor, theirs


def main(argv: list[str] | None = None) -> None:
    repeats = start(argv, "per measurement of both histograms")
    for name, build in (("3C3D", c3d), ("digits MLP", digits_mlp)):
        batches = batches_for(name)
        t = timed({"plain": loop(build, batches, None), "ours": loop(build, batches, BOTH),
                   "cockpit": cockpit_loop(build, batches, _cockpit_hists)}, repeats)  # fmt: skip
        row(name, "extra ms per step", *extra_ms(t))
        a, per_tensor, b = _binning(build, batches[0])
        t = timed({"ours": a, "per_tensor": per_tensor, "theirs": b}, repeats)
        theirs = t["theirs"] * 1e3 if "theirs" in t else None
        row(name, "binning alone (ms)", t["ours"] * 1e3, theirs)
        row(name, "+ per tensor (ms)", t["per_tensor"] * 1e3, theirs)


if __name__ == "__main__":
    main()
