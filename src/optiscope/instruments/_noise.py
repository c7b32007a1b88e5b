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

__all__ = ["DDPNoise", "MicroBatchNoise", "NoiseEMA", "noise_estimates", "split_gradient_norms"]


def noise_estimates(
    small_sq: torch.Tensor, big_sq: torch.Tensor, b_small: float, b_big: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """McCandlish et al.'s unbiased ``(|G|^2, tr(Sigma))`` from the two squared norms.

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
    """Bias-corrected moving averages of ``|G|^2`` and ``tr(Sigma)``, on the device."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self.g2: torch.Tensor | None = None
        self.trace: torch.Tensor | None = None
        self.count = 0

    def update(self, g2: torch.Tensor, trace: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Fold in one estimate; returns smoothed ``(noise_scale, |G|^2, tr(Sigma))``."""
        beta = self.smoothing
        g2, trace = g2.detach().float(), trace.detach().float()
        if self.g2 is None or self.trace is None:
            self.g2, self.trace = (1 - beta) * g2, (1 - beta) * trace
        else:
            self.g2 = beta * self.g2 + (1 - beta) * g2
            self.trace = beta * self.trace + (1 - beta) * trace
        self.count += 1
        debias = 1 - beta**self.count
        g2_s, trace_s = self.g2 / debias, self.trace / debias
        return trace_s / g2_s, g2_s, trace_s

    def state_dict(self) -> dict[str, Any]:
        return {"g2": self.g2, "trace": self.trace, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g2, self.trace, self.count = state["g2"], state["trace"], int(state["count"])


class MicroBatchNoise:
    """Per-micro-batch gradients under accumulation, read as differences of ``.grad``.

    After micro-batch ``i``'s backward the accumulated gradient is ``A_i``; its
    contribution is ``d_i = A_i - A_{i-1}``. With the loss divided by the ``k``
    micro-batches of the step (and multiplied by a GradScaler scale ``s``), micro-batch
    ``i``'s own mean-loss gradient is ``g_i = k d_i / s``, the small-batch estimate is the
    mean of ``|g_i|^2`` and the big one ``|A_k / s|^2``. Costs per micro-batch of a
    measured step: one subtraction, one norm and one copy over the gradients; memory for
    one copy of them.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.prev: list[torch.Tensor] | None = None
        self.reset()

    def reset(self) -> None:
        self.sq: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.started = False

    @torch.no_grad()
    def after_backward(self, batch_size: int, scale: torch.Tensor | float | None) -> None:
        grads = [p.grad if p.grad is not None else None for p in self.params]
        if any(g is None for g in grads):
            raise ValueError(
                "noise_source='micro_batches' needs a gradient for every trainable "
                "parameter after each backward (a parameter got no .grad)"
            )
        if self.prev is None:
            self.prev = [torch.zeros_like(g) for g in grads]  # type: ignore[arg-type]
        if not self.started:
            sq = torch.stack([n.float() for n in torch._foreach_norm(grads)]).square().sum()
            self.started = True
        else:
            torch._foreach_sub_(self.prev, grads)  # prev <- A_{i-1} - A_i = -d_i
            sq = torch.stack([n.float() for n in torch._foreach_norm(self.prev)]).square().sum()
        torch._foreach_copy_(self.prev, grads)
        if scale is not None:
            sq = sq / torch.as_tensor(scale, device=sq.device, dtype=sq.dtype).square()
        self.sq.append(sq)
        self.sizes.append(batch_size)

    @torch.no_grad()
    def norms(
        self, scale: torch.Tensor | float | None
    ) -> tuple[torch.Tensor, torch.Tensor, float, float] | None:
        """``(|G_s|^2, |G_b|^2, B_s, B_b)`` of the finished step, or None for one micro-batch."""
        k = len(self.sq)
        if k < 2 or self.prev is None:
            return None
        small = torch.stack(self.sq).mean() * (k * k)
        big = torch.stack([n.float() for n in torch._foreach_norm(self.prev)]).square().sum()
        if scale is not None:
            big = big / torch.as_tensor(scale, device=big.device, dtype=big.dtype).square()
        total = float(sum(self.sizes))
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

    def __init__(self, ddp_model: nn.Module, world_size: int) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        self.world_size = world_size
        self.local_sq: torch.Tensor | None = None
        self.fired = False

        def hook(state: Any, bucket: Any) -> Any:
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
