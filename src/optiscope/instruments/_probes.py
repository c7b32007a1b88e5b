"""The probe quantities: sharpness, preconditioned sharpness, gradient tests, split noise.

Each runs on the fixed probe batch at the weights after the step, in eval mode (dropout
off, BatchNorm on its running statistics: deterministic, and per-sample gradients stay
independent), inside :func:`~optiscope._internal.restore.preserved` with the RNG states,
so parameters, gradients, buffers, train/eval modes and RNG come back bit-for-bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optiscope._internal.restore import preserved
from optiscope.batch_loss import BatchLoss
from optiscope.instruments._grad_tests import GRAD_TESTS, _slice, gradient_tests
from optiscope.instruments._noise import NoiseEMA, noise_estimates, split_gradient_norms
from optiscope.instruments._record import Recorder
from optiscope.instruments._sharpness import (
    SharpnessTracker,
    adam_preconditioner,
    preconditioned_threshold,
    sharpness_threshold,
)

__all__ = ["Probes"]


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
        seed: int,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.batch_loss = batch_loss
        self.names = names
        self.quantities = set(quantities)
        self.split = split
        self.ema = ema
        self.sharpness = SharpnessTracker(batch_loss, names, iters, tol, seed)
        self.preconditioned = SharpnessTracker(batch_loss, names, iters, tol, seed + 1)

    def measure(
        self,
        step: int,
        probe: Any,
        jobs: list[str],
        split_noise: bool,
        batch_size: float,
        recorder: Recorder,
    ) -> None:
        """Run ``jobs`` (and the split noise scale) and queue the results for ``step``."""
        host: dict[str, float] = {}
        tensors: list[torch.Tensor] = []
        with preserved(self.model, rng=True):
            self.model.eval()
            if "sharpness" in jobs:
                host["sharpness"] = self.sharpness.measure(self.model, probe)[0]
                host["sharpness_threshold"] = sharpness_threshold(self.optimizer)
            if "preconditioned_sharpness" in jobs:
                params = dict(self.model.named_parameters())
                d = adam_preconditioner(self.optimizer, [params[n] for n in self.names])
                if d is not None:  # Adam has no state before its first step
                    top = self.preconditioned.measure(self.model, probe, d)[0]
                    host["preconditioned_sharpness"] = top
                    host["preconditioned_threshold"] = preconditioned_threshold(self.optimizer)
            tests = "grad_tests" in jobs
            if tests:
                out = gradient_tests(self.model, self.batch_loss, probe, self.names)
                tensors += [out[k] for k in GRAD_TESTS]
            n = 0
            if split_noise:
                assert self.split is not None
                n = self.batch_loss.size(probe)
                bounds = [round(i * n / self.split) for i in range(self.split + 1)]
                pieces = [_slice(probe, a, b) for a, b in zip(bounds, bounds[1:])]
                tensors += split_gradient_norms(self.model, self.batch_loss, pieces, self.names)
        flat = torch.stack([t.reshape(()).float() for t in tensors]) if tensors else None
        recorder.add(step, flat, self.finish, (host, tests, n, batch_size or n))

    def finish(self, vals: list[float], meta: Any) -> dict[str, float]:
        host, tests, n, used = meta
        out = dict(host)
        if tests:
            out.update({f"grad_tests/{k}": v for k, v in zip(GRAD_TESTS, vals[:4])})
            vals = vals[4:]
        if n:
            assert self.split is not None
            small, big = vals[0], vals[1]
            out.update(self.ema.update(*noise_estimates(small, big, n / self.split, n)))
            out["batch_size"] = float(used)
        return out
