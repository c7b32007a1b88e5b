"""What the trainer recorded, kept once: per-step records, per-epoch values, pending steps.

Calling ``loss.item()`` every step forces the host to wait for the device, which stalls
the CUDA queue (and costs a few microseconds even on CPU). The trainer keeps each step's
detached 0-d tensors in :class:`History`'s pending list and copies them all to the host
with a single ``tolist()`` at a log point (every ``log_interval`` optimizer steps, at the
end of an epoch, before a checkpoint). The guide's lists (``trainer.grad_norms``, ...)
are read-only views of the records, never copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from optiscope.clipping import ClipResult

__all__ = ["StepRecord", "History", "View"]


@dataclass(slots=True)
class StepRecord:
    """What happened at one optimizer step, as host numbers.

    Attributes:
        step: Optimizer step index (0-based, counted across epochs, skipped steps included).
        epoch: Epoch index (1-based, as the guide prints it).
        loss: Mean loss of the step's micro-batches (sample-weighted).
        grad_norm: Total gradient norm before clipping.
        lr: Learning rate of the first param group used for this update.
        clipped: Whether the clipper changed the gradients (None: it did not say).
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


class View(Sequence):
    """A read-only view of a list (or of one attribute of a list of records).

    Compares equal to any sequence with the same items, so ``trainer.train_losses ==
    [0.5, 0.4]`` reads as it would for a list.

    Example:
        >>> View([StepRecord(0, 1, 0.5, 2.0, 0.1, None, False)], "loss")
        View([0.5])
    """

    __slots__ = ("_items", "_attr")

    def __init__(self, items: list[Any], attr: str | None = None) -> None:
        self._items = items
        self._attr = attr

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        item = self._items[index]
        return item if self._attr is None else getattr(item, self._attr)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        if self._attr is None:
            return iter(self._items)
        return (getattr(r, self._attr) for r in self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    def __add__(self, other: Sequence) -> list[Any]:
        return [*self, *other]

    def __radd__(self, other: Sequence) -> list[Any]:
        return [*other, *self]

    def __repr__(self) -> str:
        return f"View({list(self)!r})"


@dataclass(slots=True)
class _Pending:
    step: int
    epoch: int
    losses: list[torch.Tensor]
    sizes: list[int]
    norm: torch.Tensor
    clip: ClipResult | None  # None: a torch-style clipper that returns only the norm
    lr: float | torch.Tensor
    skipped: bool


@dataclass
class History:
    """Every value the trainer recorded, each kept once.

    Attributes:
        steps: One :class:`StepRecord` per optimizer step that reached the host.
        train_losses: Mean training loss of each epoch (applied steps only).
        val_losses: Validation loss of each :meth:`AdvancedTrainer.validate` call.
        val_accuracies: Its accuracy (None where it cannot be computed).
    """

    steps: list[StepRecord] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_accuracies: list[float | None] = field(default_factory=list)
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)  # this step's micro-batches
    sizes: list[int] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)

    def add_micro_batch(self, loss: torch.Tensor, n: int) -> None:
        """Keep the detached ``loss`` of a micro-batch of ``n`` samples (no host sync)."""
        self.losses.append(loss)
        self.sizes.append(n)

    def step_loss_sum(self) -> torch.Tensor:
        """Sum of this step's micro-batch losses: non-finite if any of them is."""
        return self.losses[0] if len(self.losses) == 1 else torch.stack(self.losses).sum()

    def end_step(
        self,
        step: int,
        epoch: int,
        norm: torch.Tensor,
        clip: ClipResult | None,
        lr: float | torch.Tensor,
        skipped: bool,
    ) -> None:
        """Close the optimizer step: its micro-batch losses become one pending record."""
        norm = norm.detach() if norm.requires_grad else norm
        pending = _Pending(step, epoch, self.losses, self.sizes, norm, clip, lr, skipped)
        self.pending.append(pending)
        self.losses, self.sizes = [], []

    def flush(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> list[StepRecord]:
        """Copy every pending step to the host (one device sync) and return the new records.

        Args:
            reduce: Applied to the flat tensor of pending values before the copy; under
                DDP the mean over ranks (norms, lrs and flags agree across ranks already,
                so only the losses change).
        """
        pending, self.pending = self.pending, []
        if not pending:
            return []
        device = pending[0].norm.device
        clips = [p.clip for p in pending if p.clip is not None]
        tensor_lrs = [p.lr for p in pending if isinstance(p.lr, torch.Tensor)]
        # One stack per kind of value (not one op per value), then one copy to the host.
        parts = [
            torch.stack([t for p in pending for t in p.losses]),
            torch.stack([p.norm for p in pending]),
            ClipResult.clipped_flags(clips),
            torch.stack(tensor_lrs) if tensor_lrs else torch.zeros(0),
        ]
        flat = torch.cat([t.to(device, torch.float32).reshape(-1) for t in parts])
        values = iter((flat if reduce is None else reduce(flat)).tolist())
        sizes = [len(t.reshape(-1)) for t in parts]
        losses_at, norms, flags, lrs = (iter([next(values) for _ in range(k)]) for k in sizes)
        records = []
        for p in pending:
            losses = [next(losses_at) for _ in p.losses]
            norm = next(norms)
            clipped = None if p.clip is None else bool(next(flags))
            lr = next(lrs) if isinstance(p.lr, torch.Tensor) else float(p.lr)
            n = sum(p.sizes)
            loss = sum(v * s for v, s in zip(losses, p.sizes)) / n if n else math.nan
            # A skipped step left the weights alone; its (non-finite) loss would poison
            # the epoch mean, so it is reported per step but not averaged.
            if not p.skipped:
                self.epoch_loss_sum += loss * n
                self.epoch_samples += n
            records.append(StepRecord(p.step, p.epoch, loss, norm, lr, clipped, p.skipped))
        self.steps.extend(records)
        return records

    def reset_epoch(self) -> None:
        self.epoch_loss_sum, self.epoch_samples = 0.0, 0
        self.losses, self.sizes, self.pending = [], [], []

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (call after :meth:`flush`: nothing pending)."""
        return {
            "steps": _records_to_columns(self.steps),
            "train_losses": torch.tensor(self.train_losses, dtype=torch.float64),
            "val_losses": torch.tensor(self.val_losses, dtype=torch.float64),
            # -1: no accuracy for that validation.
            "val_accuracies": torch.tensor(
                [-1.0 if a is None else a for a in self.val_accuracies], dtype=torch.float64
            ),
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_samples": self.epoch_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset_epoch()
        self.steps = _records_from_columns(state["steps"])
        self.train_losses = state["train_losses"].tolist()
        self.val_losses = state["val_losses"].tolist()
        self.val_accuracies = [None if a < 0 else a for a in state["val_accuracies"].tolist()]
        self.epoch_loss_sum = float(state["epoch_loss_sum"])
        self.epoch_samples = int(state["epoch_samples"])


# Per-step history is stored as tensor columns: saving a long run's checkpoint every few
# steps stays cheap (no per-step dicts to pickle), and float64 round-trips exactly.
_COLUMNS = {
    "step": torch.int64,
    "epoch": torch.int64,
    "loss": torch.float64,
    "grad_norm": torch.float64,
    "lr": torch.float64,
    "clipped": torch.int8,  # -1: the clipper did not say
    "skipped": torch.bool,
}


def _records_to_columns(records: list[StepRecord]) -> dict[str, torch.Tensor]:
    def value(r: StepRecord, name: str) -> Any:
        v = getattr(r, name)
        return -1 if v is None else v

    return {
        name: torch.tensor([value(r, name) for r in records], dtype=dtype)
        for name, dtype in _COLUMNS.items()
    }


def _records_from_columns(columns: dict[str, torch.Tensor]) -> list[StepRecord]:
    lists = [columns[name].tolist() for name in _COLUMNS]
    return [
        StepRecord(step, epoch, loss, norm, lr, None if clip < 0 else bool(clip), skipped)
        for step, epoch, loss, norm, lr, clip, skipped in zip(*lists)
    ]
