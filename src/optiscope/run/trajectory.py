"""Weight snapshots over training, saved to disk so the PCA trajectory survives a resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from optiscope._internal.atomic import atomic_write

__all__ = ["TrajectoryRecorder", "load_trajectory"]


class TrajectoryRecorder:
    """A trainer callback that saves the trainable weights every ``every`` epochs.

    Snapshots go to ``directory/epoch_0000.pt`` (the initial weights), ``epoch_0001.pt``,
    ...: one file each, written atomically, so an interrupted and resumed run still has
    the whole path. Copies happen at epoch ends only (a log point), never per step.

    Args:
        directory: Where the snapshots go.
        every: Save after every ``every``-th epoch (>= 1).

    Raises:
        ValueError: ``every < 1``.

    Example:
        >>> import tempfile, types, torch
        >>> rec = TrajectoryRecorder(tempfile.mkdtemp())
        >>> t = types.SimpleNamespace(model=torch.nn.Linear(2, 1), epoch=0)
        >>> rec.on_train_start(t); t.epoch = 1; rec.on_epoch_end(t)
        >>> len(load_trajectory(rec.directory))
        2
    """

    def __init__(self, directory: str | os.PathLike, every: int = 1) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.directory = Path(directory)
        self.every = every

    def on_train_start(self, trainer: Any) -> None:
        # Only a fresh start has the initial weights: a run resumed in its first epoch
        # already took steps, and its epoch-0 snapshot is on disk from before.
        fresh = trainer.epoch == 0 and getattr(trainer, "global_step", 0) == 0
        if fresh or not (self.directory / "epoch_0000.pt").exists():
            if trainer.epoch == 0:
                self._save(trainer.model, 0)

    def on_epoch_end(self, trainer: Any) -> None:
        if trainer.epoch % self.every == 0:
            self._save(trainer.model, trainer.epoch)

    def _save(self, model: torch.nn.Module, epoch: int) -> None:
        state = {
            n: p.detach().to("cpu", copy=True)
            for n, p in model.named_parameters()
            if p.requires_grad
        }
        atomic_write(self.directory / f"epoch_{epoch:04d}.pt", lambda f: torch.save(state, f))


def load_trajectory(directory: str | os.PathLike) -> list[dict[str, torch.Tensor]]:
    """The snapshots in ``directory``, oldest first (empty when there are none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [
        torch.load(p, map_location="cpu", weights_only=True)
        for p in sorted(directory.glob("epoch_*.pt"))
    ]
