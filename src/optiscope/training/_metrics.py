"""On-device metric buffers, copied to the host once per log point.

Calling ``loss.item()`` every step forces the host to wait for the device, which stalls
the CUDA queue (and costs a few microseconds even on CPU). The trainer instead keeps the
detached 0-d tensors of each step in Python lists and copies them all to the host with a
single ``tolist()`` at a log point (every ``log_interval`` optimizer steps, at the end of
an epoch, before a checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["StepRecord", "MetricBuffer"]


@dataclass(slots=True)
class StepRecord:
    """What happened at one optimizer step, as host numbers.

    Attributes:
        step: Optimizer step index (0-based, counted across epochs).
        epoch: Epoch index (1-based, as the guide prints it).
        loss: Mean loss of the step's micro-batches (sample-weighted).
        grad_norm: Total gradient norm before clipping.
        lr: Learning rate of the first param group used for this update.
        clipped: Whether the clipper scaled the gradients down (None: not known).
        skipped: Whether the update was skipped (non-finite loss or gradient).
    """

    step: int
    epoch: int
    loss: float
    grad_norm: float
    lr: float
    clipped: bool | None
    skipped: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "lr": self.lr,
            "clipped": self.clipped,
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class _PendingStep:
    step: int
    epoch: int
    losses: list[torch.Tensor]
    sizes: list[int]
    grad_norm: torch.Tensor
    lr: float | torch.Tensor
    clipped: torch.Tensor | None
    skipped: bool | None  # None: only known on the device (nonfinite="ignore")
    found_inf: torch.Tensor | None


@dataclass
class MetricBuffer:
    """Collects per-step tensors and the running epoch loss without touching the host.

    ``add_micro_batch`` and ``end_step`` only append references; ``flush`` copies every
    pending value with one ``tolist()`` and returns :class:`StepRecord` s.
    """

    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    _losses: list[torch.Tensor] = field(default_factory=list)
    _sizes: list[int] = field(default_factory=list)
    _pending: list[_PendingStep] = field(default_factory=list)

    def add_micro_batch(self, loss: torch.Tensor, n: int) -> None:
        """Keep ``loss`` (already detached) of a micro-batch of ``n`` samples."""
        self._losses.append(loss)
        self._sizes.append(n)

    def end_step(
        self,
        step: int,
        epoch: int,
        grad_norm: torch.Tensor,
        lr: float | torch.Tensor,
        clipped: torch.Tensor | None,
        skipped: bool | None,
        found_inf: torch.Tensor | None = None,
    ) -> None:
        self._pending.append(
            _PendingStep(
                step,
                epoch,
                self._losses,
                self._sizes,
                grad_norm if not grad_norm.requires_grad else grad_norm.detach(),
                lr,
                clipped,
                skipped,
                found_inf,
            )
        )
        self._losses, self._sizes = [], []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(
        self,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        clip_threshold: float | None = None,
    ) -> list[StepRecord]:
        """Copy every pending step to the host (one device sync) and return the records.

        Args:
            reduce: Applied to the flat tensor of pending values before the copy; under
                DDP the mean over ranks (norms, lrs and flags agree across ranks already,
                so only the losses change).
            clip_threshold: For clippers that report no ``clipped`` flag, a step counts
                as clipped when its norm exceeds this.
        """
        if not self._pending:
            return []
        pending = self._pending
        # One stack per kind of value (not one op per value), then one copy to the host.
        groups = [
            [t for p in pending for t in p.losses],
            [p.grad_norm for p in pending],
            [p.clipped for p in pending if p.clipped is not None],
            [p.found_inf for p in pending if p.found_inf is not None],
            [p.lr for p in pending if isinstance(p.lr, torch.Tensor)],
        ]
        device = pending[0].grad_norm.device
        flat = torch.cat(
            [torch.stack(g).to(device=device, dtype=torch.float32).reshape(-1) for g in groups if g]
        )
        if reduce is not None:
            flat = reduce(flat)
        values = flat.tolist()
        sizes = [len(g) for g in groups]
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        losses_at, norm_at, clip_at, inf_at, lr_at = (iter(values[a:]) for a in starts)
        records = []
        for p in pending:
            losses = [next(losses_at) for _ in p.losses]
            norm = next(norm_at)
            if p.clipped is not None:
                clipped = bool(next(clip_at))
            else:
                clipped = None if clip_threshold is None else norm > clip_threshold
            skipped = p.skipped
            if p.found_inf is not None:
                found = bool(next(inf_at))
                skipped = found if skipped is None else skipped
            lr = next(lr_at) if isinstance(p.lr, torch.Tensor) else float(p.lr)
            n = sum(p.sizes)
            loss = sum(v * s for v, s in zip(losses, p.sizes)) / n if n else math.nan
            # A skipped step left the weights alone; its (non-finite) loss would poison
            # the epoch mean, so it is reported per step but not averaged.
            if not skipped:
                self.epoch_loss_sum += loss * n
                self.epoch_samples += n
            records.append(StepRecord(p.step, p.epoch, loss, norm, lr, clipped, bool(skipped)))
        self._pending = []
        return records

    def epoch_mean(self) -> float:
        """Sample-weighted mean training loss of the epoch so far (NaN if nothing yet)."""
        return self.epoch_loss_sum / self.epoch_samples if self.epoch_samples else math.nan

    def reset_epoch(self) -> None:
        self.epoch_loss_sum, self.epoch_samples = 0.0, 0
        self._losses, self._sizes, self._pending = [], [], []

    def state_dict(self) -> dict[str, Any]:
        # Only called right after flush(), so nothing pending is lost.
        return {"epoch_loss_sum": self.epoch_loss_sum, "epoch_samples": self.epoch_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset_epoch()
        self.epoch_loss_sum = float(state["epoch_loss_sum"])
        self.epoch_samples = int(state["epoch_samples"])
