"""The per-step quantities: device work at the hooks, host arithmetic at log points.

On a measured step the device does only what needs the tensors: a weight snapshot, the
update and distance subtractions, one foreach norm over gradients, weights, updates and
distances, the micro-batch gradient differences, and one ``torch.stack`` of all the 0-d
results. Everything else (global norms as root sums of squares, update ratios, the noise
estimators and their moving averages) is arithmetic on a few floats per step and runs on
the host when the :class:`~optiscope.instruments._record.Recorder` flushes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from optiscope.instruments._layers import LayerNorms
from optiscope.instruments._noise import (
    DDPNoise,
    MicroBatchNoise,
    NoiseEMA,
    micro_estimate,
    noise_estimates,
)
from optiscope.instruments._record import Recorder

__all__ = ["StepMeasure"]


def _root_sum_sq(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


class StepMeasure:
    """Loss, gradient/weight/update/distance norms and the live noise scale of a step.

    Args:
        names: Names of the trainable parameters (for the per-layer keys).
        params: The trainable parameters, in the same order.
        quantities: The requested quantity names.
        noise_source: ``"micro_batches"``, ``"ddp"``, another source (measured by the
            probes) or None.
        ddp_model: The DDP wrapper for ``noise_source="ddp"``.
        world_size: Ranks in the process group (1 without one).
        ema: The noise scale's moving averages (shared with split-noise probes).
    """

    def __init__(
        self,
        names: list[str],
        params: list[nn.Parameter],
        quantities: tuple[str, ...],
        noise_source: str | None,
        ddp_model: nn.Module | None,
        world_size: int,
        ema: NoiseEMA,
    ) -> None:
        q = set(quantities)
        self.L = len(params)
        self.want_loss = "loss" in q
        self.want_layers = "layers" in q
        self.want_grad_norm = "grad_norm" in q
        self.want_grads = self.want_grad_norm or self.want_layers
        self.want_distance = "distance" in q
        self.snapshots = self.want_layers or self.want_distance
        self.layers = LayerNorms(params, self.snapshots, self.want_layers)
        noise = noise_source if "noise_scale" in q else None
        self.micro = MicroBatchNoise(params) if noise == "micro_batches" else None
        self.ddp = DDPNoise(ddp_model) if noise == "ddp" and ddp_model is not None else None
        self.world_size = world_size
        self.ema = ema
        self.keys = {
            kind: tuple(f"layers/{n}/{kind}" for n in names)
            for kind in ("grad_norm", "weight_norm", "update_norm", "update_ratio", "distance")
        }
        self.snapshot_for = -1  # the step whose pre-step weights the snapshot holds
        self.reset()

    def reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.weights: list[float] = []
        self.sizes = 0
        self.scale: Any = None
        self.grads: list[torch.Tensor] | None = None
        self.big: list[torch.Tensor] | None = None  # accumulated gradient's layer norms
        self.measured_before = False
        if self.micro is not None:
            self.micro.reset()
        if self.ddp is not None:
            self.ddp.reset()

    # ------------------------------------------------------------ device side
    def after_backward(self, loss: Any, batch_size: int | None, grad_scale: Any) -> None:
        if self.want_loss and loss is not None:
            loss = loss.detach() if loss.requires_grad else loss
            self.losses.append(loss if loss.dim() == 0 else loss.reshape(()))
            self.weights.append(1.0 if batch_size is None else float(batch_size))
        if batch_size is not None:
            self.sizes += int(batch_size)
        self.scale = grad_scale
        if self.micro is None and self.ddp is None:
            return
        if batch_size is None:
            source = "micro_batches" if self.micro is not None else "ddp"
            raise ValueError(f"noise_source={source!r} needs after_backward(..., batch_size=n)")
        if self.micro is not None:
            self.micro.after_backward()
        elif self.ddp is not None and self.ddp.fired and self.big is None:
            # The all-reduce ran inside this backward: .grad is now the global mean.
            with torch.no_grad():
                self.big = list(torch._foreach_norm([p.grad for p in self.layers.params]))

    def before(self) -> None:
        """Read the gradients the optimizer will use (once per step)."""
        if self.measured_before:
            return
        self.measured_before = True
        if self.want_grads:
            with torch.no_grad():
                self.grads = self.layers.grad_norms()
        if self.micro is not None and self.micro.count >= 2:
            self.big = self.micro.big_norms()

    def record(self, step: int, lr: Any, recorder: Recorder) -> None:
        """Stack this step's device values into one tensor and queue it with its layout."""
        update = self.want_layers and self.snapshot_for == step
        grads = self.grads if self.want_grads else None
        with torch.no_grad():
            norms = self.layers.norms(step, self.want_layers, update, self.snapshots)
        parts = (grads or []) + norms
        n_loss = len(self.losses)
        parts = self.losses + parts
        noise: tuple | None = None
        if self.micro is not None and self.big is not None:
            parts += self.micro.norms + self.big
            noise = ("micro", self.micro.count, float(self.sizes))
        elif self.ddp is not None and self.ddp.local_sq is not None and self.big is not None:
            parts += [self.ddp.local_sq] + self.big
            noise = ("ddp", 1, float(self.sizes))
        has_scale = noise is not None and self.scale is not None
        if has_scale:
            parts.append(torch.as_tensor(self.scale, device=parts[0].device))
        lr_tensor = isinstance(lr, torch.Tensor)
        if lr_tensor:
            parts.append(lr.detach().reshape(()))
        flat = torch.stack(parts) if parts else None
        meta = (n_loss, self.weights, grads is not None, update, noise, has_scale,
                None if lr_tensor else float(lr))  # fmt: skip
        recorder.add(step, flat, self.finish, meta)

    # ------------------------------------------------------------ host side
    def finish(self, vals: list[float], meta: Any) -> dict[str, float]:
        n_loss, weights, has_grads, update, noise, has_scale, lr = meta
        out: dict[str, float] = {}
        L, i = self.L, n_loss
        if n_loss:
            out["loss"] = sum(v * w for v, w in zip(vals[:n_loss], weights)) / sum(weights)

        def take(n: int) -> list[float]:
            nonlocal i
            i += n
            return vals[i - n : i]

        if has_grads:
            g = take(L)
            if self.want_grad_norm:
                out["grad_norm"] = _root_sum_sq(g)
            if self.want_layers:
                out.update(zip(self.keys["grad_norm"], g))
        w = take(L) if self.want_layers else []
        u = take(L) if update else []
        d = take(L) if self.snapshots else []
        if self.want_layers:
            out.update(zip(self.keys["weight_norm"], w))
            if update:
                out.update(zip(self.keys["update_norm"], u))
                ratios = [a / b if b > 0 else math.nan for a, b in zip(u, w)]
                out.update(zip(self.keys["update_ratio"], ratios))
                out["update_norm"] = _root_sum_sq(u)
                out["update_ratio"] = out["update_norm"] / _root_sum_sq(w)
            out.update(zip(self.keys["distance"], d))
        if self.want_distance:
            out["distance"] = _root_sum_sq(d)
        if noise is not None:
            kind, k, total = noise
            d_norms = take(k * L) if kind == "micro" else take(1)
            big = take(L)
            scale = take(1)[0] if has_scale else 1.0
            if kind == "micro":
                small, big_sq, b_s, b_b = micro_estimate(d_norms, big, k, total, scale)
            else:
                small = d_norms[0] / (scale * scale)
                big_sq = sum(x * x for x in big) / (scale * scale)
                b_s, b_b = total, total * self.world_size
            out.update(self.ema.update(*noise_estimates(small, big_sq, b_s, b_b)))
            out["batch_size"] = b_b
        out["lr"] = take(1)[0] if lr is None else lr
        return out
