"""The gradient noise scale of McCandlish et al. (2018), from gradients at two batch sizes.

With ``|G_s|^2`` and ``|G_b|^2`` the squared norms of gradients over batches of
``B_s < B_b`` samples, their Appendix A gives unbiased estimates of the true gradient's
squared norm and of the trace of the per-sample gradient covariance:

.. math::

    |\\mathcal{G}|^2 \\approx \\frac{B_b |G_b|^2 - B_s |G_s|^2}{B_b - B_s}, \\qquad
    \\operatorname{tr}\\Sigma \\approx \\frac{|G_s|^2 - |G_b|^2}{1/B_s - 1/B_b}.

Both are noisy, so each is smoothed with its own exponential moving average (bias
corrected like Adam's moments) and the simple noise scale is the ratio of the averages,
``B_simple = tr(Sigma) / |G|^2``. McCandlish et al. show that the critical batch size (past
which larger batches stop buying proportionally fewer steps) is close to ``B_simple``
when the Hessian is well conditioned; optiscope reports ``B_simple`` as that estimate.

Where the two batch sizes come from (:class:`MicroBatchNoise`, :class:`DDPNoise`,
:func:`split_gradient_norms`) is the caller's choice; the estimator is one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import grad

from optiscope.batch_loss import BatchLoss

__all__ = [
    "DDPNoise",
    "MicroBatchNoise",
    "NoiseEMA",
    "micro_estimate",
    "noise_estimates",
    "split_gradient_norms",
]


def noise_estimates(small_sq: Any, big_sq: Any, b_small: float, b_big: float) -> tuple[Any, Any]:
    """McCandlish et al.'s unbiased ``(|G|^2, tr(Sigma))`` from the two squared norms.

    Works on floats and on tensors alike.

    Example:
        >>> import torch
        >>> g2, s = noise_estimates(torch.tensor(3.0), torch.tensor(2.0), 1, 2)
        >>> g2.item(), s.item()
        (1.0, 2.0)
    """
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


class NoiseEMA:
    """Bias-corrected moving averages of ``|G|^2`` and ``tr(Sigma)`` (host floats).

    Folded in at log points from the copied estimates, in step order, so the device
    never waits and a checkpoint holds three numbers.
    """

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self.g2 = 0.0
        self.trace = 0.0
        self.count = 0

    def update(self, g2: float, trace: float) -> dict[str, float]:
        """Fold in one estimate; the smoothed noise scale and its parts."""
        beta = self.smoothing
        self.g2 = beta * self.g2 + (1 - beta) * g2
        self.trace = beta * self.trace + (1 - beta) * trace
        self.count += 1
        debias = 1 - beta**self.count
        g2_s, trace_s = self.g2 / debias, self.trace / debias
        scale = trace_s / g2_s if g2_s != 0 else float("nan")
        return {
            "noise_scale": scale,
            "critical_batch_size": scale,
            "noise_scale/grad_sq": g2_s,
            "noise_scale/trace": trace_s,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"g2": self.g2, "trace": self.trace, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g2, self.trace = float(state["g2"]), float(state["trace"])
        self.count = int(state["count"])


class MicroBatchNoise:
    """Per-micro-batch gradients under accumulation, read as differences of ``.grad``.

    After micro-batch ``i``'s backward the accumulated gradient is ``A_i``; its
    contribution is ``d_i = A_i - A_{i-1}``. With the loss divided by the ``k``
    micro-batches of the step (and multiplied by a GradScaler scale ``s``), micro-batch
    ``i``'s own mean-loss gradient is ``g_i = k d_i / s``, the small-batch estimate is the
    mean of ``|g_i|^2`` and the big one ``|A_k / s|^2`` (read before any clipping). Costs
    per micro-batch of a measured step: one subtraction, one foreach norm and one copy
    over the gradients; memory for one copy of them.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.prev: list[torch.Tensor] | None = None
        self.norms: list[torch.Tensor] = []  # per-layer |d_i| of every micro-batch
        self.count = 0

    def reset(self) -> None:
        self.norms = []
        self.count = 0

    @torch.no_grad()
    def after_backward(self) -> None:
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            raise ValueError(
                "noise_source='micro_batches' needs a gradient for every trainable "
                "parameter after each backward (a parameter got no .grad)"
            )
        if self.prev is None:
            self.prev = [torch.empty_like(g) for g in grads]  # type: ignore[arg-type]
        if self.count == 0:
            self.norms += torch._foreach_norm(grads)  # type: ignore[arg-type]
        else:
            torch._foreach_sub_(self.prev, grads)  # prev <- A_{i-1} - A_i = -d_i
            self.norms += torch._foreach_norm(self.prev)
        torch._foreach_copy_(self.prev, grads)  # type: ignore[arg-type]
        self.count += 1

    @torch.no_grad()
    def big_norms(self) -> list[torch.Tensor]:
        """Per-layer norms of the accumulated gradient ``A_k`` (before unscaling/clipping)."""
        assert self.prev is not None
        return list(torch._foreach_norm(self.prev))


def micro_estimate(
    d_norms: list[float], a_norms: list[float], k: int, total: float, scale: float
) -> tuple[float, float, float, float]:
    """``(|G_s|^2, |G_b|^2, B_s, B_b)`` from the copied per-layer norms of one step."""
    L = len(a_norms)
    per_micro = [sum(x * x for x in d_norms[i * L : (i + 1) * L]) for i in range(k)]
    small = k * k * sum(per_micro) / k / (scale * scale)
    big = sum(x * x for x in a_norms) / (scale * scale)
    return small, big, total / k, total


class DDPNoise:
    """The local gradient of this rank against the all-reduced one, via a DDP comm hook.

    The hook adds each bucket's squared norm (this rank's gradient, accumulated over its
    micro-batches, before the all-reduce) and then runs DDP's default all-reduce, so it
    costs one squared norm per bucket and no extra communication. Only the local rank's
    ``|G_local|^2`` enters the small-batch estimate: it is unbiased on its own, and the
    moving average removes the extra noise without another collective. Any comm hook
    the model already has is replaced (DDP allows one).
    """

    def __init__(self, ddp_model: nn.Module) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        self.local_sq: torch.Tensor | None = None
        self.fired = False

        # No annotations: DDP checks them against its own classes, and postponed
        # annotations (from __future__) would be strings.
        def hook(state, bucket):  # noqa: ANN001, ANN202
            sq = bucket.buffer().detach().float().square().sum()
            self.local_sq = sq if self.local_sq is None else self.local_sq + sq
            self.fired = True
            return allreduce_hook(state, bucket)

        ddp_model.register_comm_hook(None, hook)

    def reset(self) -> None:
        self.local_sq, self.fired = None, False


def split_gradient_norms(
    model: nn.Module,
    batch_loss: BatchLoss,
    pieces: list[Any],
    names: list[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean of |g_j|^2 over the pieces, |size-weighted mean of g_j|^2)`` on the probe.

    One forward and backward per piece through ``torch.func`` (``.grad`` untouched), so
    the cost is one more pass over the probe batch per measurement.
    """
    params = dict(model.named_parameters())
    fixed = {n: p.detach() for n, p in params.items() if n not in names}
    fixed.update({n: b.detach() for n, b in model.named_buffers()})
    primals = {n: params[n].detach() for n in names}

    def loss_of(p: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        return batch_loss.evaluate(model, batch, state={**fixed, **p}).loss

    sq: list[torch.Tensor] = []
    total: list[torch.Tensor] = []
    weight = 0
    for piece in pieces:
        g = grad(loss_of)(primals, piece)
        flat = [g[n] for n in names]
        sq.append(torch.stack([n.float() for n in torch._foreach_norm(flat)]).square().sum())
        w = batch_loss.size(piece)
        total = [t * w for t in flat] if not total else [a + t * w for a, t in zip(total, flat)]
        weight += w
    big = torch.stack([n.float() for n in torch._foreach_norm(total)]).square().sum() / weight**2
    return torch.stack(sq).mean(), big
