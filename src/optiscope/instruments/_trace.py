"""The Hessian trace of the probe batch as an instrument: Hutch++ on the sharpness sketch.

At a probe step the sharpness Lanczos has just left an orthonormal Krylov basis ``Q``
of the probe Hessian (its rows, from the warm start) and ``tr(Q^T H Q)`` (the sum of its
alphas) at no further cost. The trace is then Krylov-sketched Hutch++ (see
:func:`optiscope.curvature.hessian_trace`): that exact low-rank part plus Hutchinson's
estimate of what is left, from ``samples`` Rademacher probes projected off ``Q``,

.. math::

    \\hat t = \\mathrm{tr}(Q^T H Q)
      + \\frac{1}{l} \\sum_i \\tilde g_i^T H \\tilde g_i, \\qquad \\tilde g_i = (I - Q^T Q) g_i .

``Q`` depends only on the start vector, never on the probes, so the estimate is unbiased
whatever ``Q``, and its standard error is that of the residual part. The top of the
spectrum, which dominates the variance of plain Hutchinson on trained networks, is in
``Q`` already. Without a sharpness measurement at the step ``Q`` is empty and this is
plain Hutchinson. Cost: ``samples`` Hessian-vector products on the graph the sharpness
built (or one build when sharpness is not measured).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from optiscope.curvature._trace import hutchinson_samples
from optiscope.instruments._eigen import ProbeHessian

__all__ = ["TraceTracker"]


class TraceTracker:
    """``tr(H)`` of the probe batch with its standard error, once per probe step.

    Args:
        samples: Residual Rademacher probes per measurement (>= 2, for a standard error).
        seed: Seeds the probes' generator (checkpointed with the instruments).
    """

    def __init__(self, samples: int, seed: int) -> None:
        self.samples = samples
        self.seed = seed
        self.generator: torch.Generator | None = None

    def measure(
        self, op: ProbeHessian, sketch: tuple[torch.Tensor, float] | None
    ) -> dict[str, float]:
        """``{"hessian_trace", "hessian_trace/stderr"}`` of the built operator ``op``."""
        if self.generator is None:
            self.generator = torch.Generator(device=op.device)
            self.generator.manual_seed(self.seed)
        Q, low_rank = sketch if sketch is not None else (None, 0.0)
        values = hutchinson_samples(
            op, self.samples, None, self.samples, self.generator, project=Q, offset=low_rank
        ).sum(dim=1)
        stderr = float(values.std(correction=1)) / math.sqrt(values.numel())
        return {"hessian_trace": low_rank + float(values.mean()), "hessian_trace/stderr": stderr}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        if state["generator"] is not None:
            self.generator = torch.Generator(device=device)
            self.generator.set_state(state["generator"])
