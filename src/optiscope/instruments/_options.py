"""The instruments' options: quantity names, noise sources and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from optiscope._internal.registry import nearest
from optiscope.batch_loss import BatchLoss, FunctionLoss, as_batch_loss

__all__ = [
    "DEFAULT_QUANTITIES",
    "NOISE_SOURCES",
    "PROBED",
    "QUANTITIES",
    "check_optimizer_fits",
    "check_probe",
    "check_quantities",
    "choose_batch_loss",
    "pick_noise_source",
    "trainable_parameters",
    "unwrap_ddp",
    "world",
]

QUANTITIES = (
    "loss",
    "grad_norm",
    "layers",
    "distance",
    "noise_scale",
    "sharpness",
    "preconditioned_sharpness",
    "hessian_trace",
    "grad_tests",
    "grad_hist",
    "grad_hist_2d",
    "alpha",
)
DEFAULT_QUANTITIES = ("loss", "grad_norm", "layers", "distance")
NOISE_SOURCES = ("auto", "micro_batches", "ddp", "split")
PROBED = (
    "sharpness", "preconditioned_sharpness", "hessian_trace", "grad_tests", "grad_hist",
    "grad_hist_2d", "alpha",
)  # fmt: skip


def check_quantities(quantities: Any) -> tuple[str, ...]:
    if isinstance(quantities, str) or not isinstance(quantities, Sequence):
        raise TypeError(f"quantities must be a list of names from {QUANTITIES}, got {quantities!r}")
    out = []
    for q in quantities:
        if not isinstance(q, str):
            raise TypeError(f"quantities must hold strings, got {type(q).__name__} {q!r}")
        if q not in QUANTITIES:
            raise ValueError(
                f"unknown quantity {q!r} in quantities{nearest(q, list(QUANTITIES))}; "
                f"known: {', '.join(QUANTITIES)}"
            )
        out.append(q)
    if not out:
        raise ValueError(f"quantities must name at least one of {QUANTITIES}")
    return tuple(dict.fromkeys(out))


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_noise_source(
    source: str, wants: set[str], ddp: bool, probe: Any, accum: int | None, later: bool
) -> str | None:
    """The noise source to use (None without ``noise_scale``); raises when none fits."""
    if "noise_scale" not in wants:
        return None
    if source == "auto":
        if ddp:
            return "ddp"
        if accum is not None and accum > 1:
            return "micro_batches"
        if probe is not None or later:
            return "split"
        raise ValueError(
            "quantities has 'noise_scale' but no second batch size is available: "
            "noise_source='auto' found no DistributedDataParallel model, no "
            "accumulation_steps > 1 and no probe_batch to split; pass one of them or "
            "noise_source='micro_batches'"
        )
    if source == "ddp" and not ddp:
        raise ValueError(
            "noise_source='ddp' needs the DistributedDataParallel-wrapped model as model "
            "(or as ddp_model)"
        )
    if source == "micro_batches" and accum == 1:
        raise ValueError(
            "noise_source='micro_batches' needs accumulation_steps > 1 (one micro-batch "
            "per step gives no second batch size)"
        )
    if source == "split" and probe is None and not later:
        raise ValueError("noise_source='split' needs a probe_batch to split")
    return source


def choose_batch_loss(loss_fn: Any, batch_loss: Any) -> BatchLoss:
    """The one :class:`BatchLoss` from ``loss_fn(output, target)`` or ``batch_loss``."""
    if loss_fn is not None and batch_loss is not None:
        raise ValueError("pass either loss_fn= or batch_loss=, not both")
    if batch_loss is None:
        return as_batch_loss(loss_fn)
    if isinstance(batch_loss, BatchLoss):
        return batch_loss
    if not callable(batch_loss):
        raise TypeError(
            f"batch_loss must be a BatchLoss or fn(model, batch), got {type(batch_loss).__name__}"
        )
    return FunctionLoss(batch_loss)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter with ``requires_grad``; raises if none."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(
            "model has no trainable parameters (requires_grad=True): nothing to measure"
        )
    return named


def check_optimizer_fits(wants: set[str], optimizer: torch.optim.Optimizer) -> None:
    """Preconditioned sharpness needs Adam's second moments (param groups with ``betas``)."""
    if "preconditioned_sharpness" in wants and not all(
        "betas" in g for g in optimizer.param_groups
    ):
        raise ValueError(
            "quantities has 'preconditioned_sharpness', which needs an Adam-family "
            f"optimizer (param groups with 'betas'), got {type(optimizer).__name__}"
        )


def check_probe(wants: set[str], has_probe: bool) -> None:
    """Sharpness and the gradient tests evaluate a fixed probe batch."""
    needs = sorted(wants & set(PROBED))
    if needs and not has_probe:
        raise ValueError(f"quantities {needs} need a probe_batch (a fixed batch to evaluate)")


def unwrap_ddp(model: nn.Module, ddp_model: Any) -> tuple[nn.Module, nn.Module | None]:
    """``(the module to measure, the DistributedDataParallel wrapper or None)``.

    ``model`` may be the wrapper itself; ``ddp_model`` is one that wraps more than
    ``model`` (Lightning's, accelerate's).
    """
    ddp_type = nn.parallel.DistributedDataParallel
    if ddp_model is not None and not isinstance(ddp_model, ddp_type):
        raise TypeError(
            f"ddp_model must be a DistributedDataParallel, got {type(ddp_model).__name__}"
        )
    if isinstance(model, ddp_type):
        return model.module, model
    return model, ddp_model
