"""The probe quantities: sharpness, preconditioned sharpness, the Hessian trace, gradient
tests and histograms, alpha, split noise.

Each runs on the fixed probe batch at the weights after the step, in eval mode (dropout
off, BatchNorm on its running statistics: deterministic, and per-sample gradients stay
independent), inside :func:`~optiscope._internal.restore.preserved` with the RNG states,
so parameters, gradients, buffers, train/eval modes and RNG come back bit-for-bit. The
Hessian probes (sharpness, preconditioned sharpness, trace) and alpha never write
parameters or gradients, so at steps with only those, modes, buffers and RNG states
alone are saved and put back. They share one gradient graph of the probe batch per
step (one forward and backward), and the trace takes the sharpness run's Lanczos basis
as its sketch; the gradient tests and histograms share one set of per-sample gradients.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.restore import RNGState, preserved
from optiscope.batch_loss import BatchLoss
from optiscope.instruments._alpha import step_alpha
from optiscope.instruments._eigen import ProbeHessian
from optiscope.instruments._grad_tests import (
    GRAD_TESTS,
    _slice,
    per_sample_gradients,
    tests_from_gradients,
)
from optiscope.instruments._hist import HIST_KEYS, Histogram, HistSpec, histogram_tensors
from optiscope.instruments._noise import NoiseEMA, noise_estimates, split_gradient_norms
from optiscope.instruments._record import Recorder
from optiscope.instruments._sharpness import (
    SharpnessTracker,
    adam_preconditioner,
    preconditioned_threshold,
    sharpness_threshold,
)
from optiscope.instruments._trace import TraceTracker

__all__ = ["Probes"]

_HESSIAN_ONLY = ("sharpness", "preconditioned_sharpness", "hessian_trace")
_FUNCTIONAL = (*_HESSIAN_ONLY, "alpha")  # never write parameters or gradients
TIC_EPS = 1e-7  # Cockpit's TIC default


@contextmanager
def _modes_rng_buffers(model: nn.Module) -> Iterator[None]:
    """Put back train/eval modes, RNG states and buffers (bit-for-bit, also on error).

    Enough for the Hessian probes and alpha: they differentiate fresh detached leaves
    (``torch.autograd.grad``, ``torch.func.jvp``), so parameters and ``.grad`` are never
    written, and a full
    :func:`~optiscope._internal.restore.preserved` (a copy of every weight and gradient
    per measurement) would only add cost. Buffers are still kept, for modules that
    write them even in eval mode.
    """
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(m, name, b.clone()) for m in model.modules()
               for name, b in m._buffers.items() if b is not None]  # fmt: skip
    rng = RNGState.capture()
    try:
        yield
    finally:
        with torch.no_grad():
            for m, name, value in buffers:
                current = m._buffers.get(name)
                if current is not None and current.shape == value.shape:
                    current.copy_(value)
                else:
                    m._buffers[name] = value
        for m, training in modes:
            m.training = training
        rng.restore()


class Probes:
    """Measures the probe quantities due at a step and queues them for the recorder."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch_loss: BatchLoss,
        names: list[str],
        quantities: tuple[str, ...],
        split: int | None,
        ema: NoiseEMA,
        iters: int,
        tol: float,
        trace_samples: int,
        seed: int,
        hist: HistSpec,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.batch_loss = batch_loss
        self.names = names
        self.quantities = set(quantities)
        self.split = split
        self.ema = ema
        self.hessian = ProbeHessian(model, batch_loss, names)  # rebuilt at each probe step
        self.sharpness = SharpnessTracker(iters, tol, seed)
        self.preconditioned = SharpnessTracker(iters, tol, seed + 1)
        self.trace = TraceTracker(trace_samples, seed + 2)
        self.hist = hist

    def measure(
        self,
        step: int,
        probe: Any,
        jobs: list[str],
        split_noise: bool,
        batch_size: float,
        recorder: Recorder,
        before: list[torch.Tensor] | None = None,
    ) -> None:
        """Run ``jobs`` (and the split noise scale) and queue the results for ``step``;
        ``"alpha"`` needs ``before``, the weights before the step."""
        host: dict[str, float] = {}
        tensors: list[torch.Tensor] = []
        tic = False
        light = not split_noise and all(j in _FUNCTIONAL for j in jobs)
        alpha = "alpha" in jobs
        tests = "grad_tests" in jobs
        hists = tuple(j for j in jobs if j in HIST_KEYS)
        layout: list[tuple[str, tuple[int, ...], list[int]]] = []
        with _modes_rng_buffers(self.model) if light else preserved(self.model, rng=True):
            self.model.eval()
            if any(j in _HESSIAN_ONLY for j in jobs):
                self.hessian.build(probe)
                try:
                    host.update(self._hessian_jobs(jobs))
                finally:
                    self.hessian.clear()
            pairs = None
            if tests or hists:
                pairs = list(per_sample_gradients(self.model, self.batch_loss, probe, self.names))
            if alpha:
                assert before is not None
                # With per-sample gradients at hand, the end of the step needs no second
                # forward-mode pass: its slopes are their dot products with the step.
                tensors.append(step_alpha(self.model, self.batch_loss, probe, self.names, before,
                                          end_gradients=pairs))  # fmt: skip
            if pairs is not None:
                tic = tests and "hessian_trace" in host
                tensors += self._per_sample_jobs(pairs, tests, hists, tic, host, layout)
            n = 0
            if split_noise:
                assert self.split is not None
                n = self.batch_loss.size(probe)
                bounds = [round(i * n / self.split) for i in range(self.split + 1)]
                pieces = [_slice(probe, a, b) for a, b in zip(bounds, bounds[1:])]
                tensors += split_gradient_norms(self.model, self.batch_loss, pieces, self.names)
        # Histogram counts pass 2^24 (float32's last exact integer): float64 when present.
        dtype = torch.float64 if layout else torch.float32
        flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors]) if tensors else None
        meta = (host, alpha, tests, tic, layout, n, batch_size or n)
        recorder.add(step, flat, self.finish, meta)

    def _per_sample_jobs(
        self,
        pairs: list[tuple[torch.Tensor, torch.Tensor]],
        tests: bool,
        hists: tuple[str, ...],
        tic: bool,
        host: dict[str, float],
        layout: list[tuple[str, tuple[int, ...], list[int]]],
    ) -> list[torch.Tensor]:
        """Gradient tests (and with ``tic`` the TIC, from the trace in ``host``) and the
        histograms ``hists`` from one set of per-sample gradients (``pairs``, the chunks
        of :func:`per_sample_gradients`); appends each histogram's layout."""
        tensors: list[torch.Tensor] = []
        if tests:
            out = tests_from_gradients(pairs, lr=self.optimizer.param_groups[0]["lr"])
            tensors += [out[k] for k in (*GRAD_TESTS, "cabs")]
            if tic:  # Thomas et al. 2019, Cockpit's TICTrace
                tensors.append(out["second_moment"] / (host["hessian_trace"] + TIC_EPS))
        if hists:
            chunks = [g for g, _ in pairs]
            for key, counts, edges in histogram_tensors(
                self.model, chunks, hists, self.hist, self.names
            ):
                tensors += [counts, *edges]
                layout.append((key, tuple(counts.shape), [e.numel() for e in edges]))
        return tensors

    def _hessian_jobs(self, jobs: list[str]) -> dict[str, float]:
        """Sharpness, preconditioned sharpness and the trace on the built probe Hessian."""
        op, out = self.hessian, {}
        if "sharpness" in jobs:
            out["sharpness"] = self.sharpness.measure(op)[0]
            out["sharpness_threshold"] = sharpness_threshold(self.optimizer)
        if "preconditioned_sharpness" in jobs:
            params = dict(self.model.named_parameters())
            d = adam_preconditioner(self.optimizer, [params[n] for n in self.names])
            if d is not None:  # Adam has no state before its first step
                out["preconditioned_sharpness"] = self.preconditioned.measure(op, d)[0]
                out["preconditioned_threshold"] = preconditioned_threshold(self.optimizer)
        if "hessian_trace" in jobs:
            sketch = self.sharpness.sketch() if "sharpness" in jobs else None
            out.update(self.trace.measure(op, sketch))
        return out

    def finish(self, vals: list[float], meta: Any) -> dict[str, Any]:
        host, alpha, tests, tic, layout, n, used = meta
        out: dict[str, Any] = dict(host)
        if alpha:
            out["alpha"], vals = vals[0], vals[1:]
        if tests:
            n_tests = len(GRAD_TESTS) + 1
            out.update({f"grad_tests/{k}": v for k, v in zip((*GRAD_TESTS, "cabs"), vals)})
            vals = vals[n_tests:]
        if tic:
            out["tic"], vals = vals[0], vals[1:]
        for key, shape, edge_sizes in layout:
            size = int(np.prod(shape))
            counts = np.asarray(vals[:size], dtype=np.int64).reshape(shape)  # exact in float64
            vals = vals[size:]
            edges = []
            for e in edge_sizes:
                edges.append(np.asarray(vals[:e]))
                vals = vals[e:]
            out[key] = Histogram(counts, tuple(edges))
        if n:
            assert self.split is not None
            small, big = vals[0], vals[1]
            out.update(self.ema.update(*noise_estimates(small, big, n / self.split, n)))
            out["batch_size"] = float(used)
        return out
