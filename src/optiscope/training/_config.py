"""The trainer's settings, checked once before any training, and kept JSON-able.

:class:`TrainerConfig` holds what is fixed for the trainer's lifetime, :class:`RunConfig`
what one ``train()`` call decides. Both check their values with the project's shared
checks (``TypeError`` for the wrong kind, ``ValueError`` for the wrong value, naming the
parameter) in ``__post_init__``, so a typo fails before any weight moves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from optiscope._internal.accuracy import TASKS
from optiscope._internal.checks import (
    check_choice,
    check_int,
    check_optional_int,
    check_positive,
    check_positive_int,
    check_real,
)

__all__ = [
    "TrainerConfig",
    "RunConfig",
    "PLATEAU",
    "check_loader",
    "check_scheduler",
    "checkpoint_directory",
]

PRECISIONS = ("32", "bf16", "16-mixed")
NONFINITE = ("skip", "raise", "ignore")
INTERVALS = ("step", "epoch")
MONITORS = ("val_loss", "val_accuracy", "train_loss")
PLATEAU = torch.optim.lr_scheduler.ReduceLROnPlateau

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class TrainerConfig:
    """Settings fixed for the trainer's lifetime (validated in ``__post_init__``)."""

    precision: str = "32"
    grad_accum_steps: int = 1
    nonfinite: str = "skip"
    max_consecutive_skips: int = 10
    log_interval: int = 100
    seed: int = 0
    task: str = "auto"

    def __post_init__(self) -> None:
        # Accept precision=32/16 as ints the way Lightning users type them.
        if isinstance(self.precision, int) and not isinstance(self.precision, bool):
            object.__setattr__(
                self, "precision", {16: "16-mixed"}.get(self.precision, str(self.precision))
            )
        check_choice("precision", self.precision, PRECISIONS)
        check_positive_int("grad_accum_steps", self.grad_accum_steps)
        check_choice("nonfinite", self.nonfinite, NONFINITE)
        check_positive_int("max_consecutive_skips", self.max_consecutive_skips)
        check_positive_int("log_interval", self.log_interval)
        check_int("seed", self.seed, low=0)
        check_choice("task", self.task, TASKS)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST_DTYPES.get(self.precision)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunConfig:
    """Settings of one ``train()`` call (validated in ``__post_init__``)."""

    epochs: int
    max_grad_norm: float | None = 1.0
    scheduler_interval: str = "step"
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int | None = None
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        if self.max_grad_norm is not None:
            check_positive("max_grad_norm", self.max_grad_norm)
        check_choice("scheduler_interval", self.scheduler_interval, INTERVALS)
        check_optional_int("checkpoint_every_steps", self.checkpoint_every_steps, low=1)
        if self.checkpoint_every_steps is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every_steps needs checkpoint_dir (or run_dir)")
        check_optional_int("early_stopping_patience", self.early_stopping_patience, low=1)
        check_choice("monitor", self.monitor, MONITORS)
        check_real("min_delta", self.min_delta, low=0.0)

    @property
    def monitor_mode(self) -> str:
        return "max" if self.monitor == "val_accuracy" else "min"

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else Path(self.checkpoint_dir)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_directory(checkpoint_dir: Any, run_dir: Path | None) -> str | None:
    """Where ``train(checkpoint_dir=...)`` writes: the path, ``run_dir`` for None, none for False.

    Raises:
        TypeError: ``checkpoint_dir`` is True or not a path (``True`` would otherwise
            become a directory named "True").
    """
    if checkpoint_dir is False:
        return None
    if checkpoint_dir is None:
        return None if run_dir is None else str(run_dir)
    if isinstance(checkpoint_dir, bool) or not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(
            "checkpoint_dir must be a path, None (use run_dir) or False (no checkpoints), "
            f"got {checkpoint_dir!r}"
        )
    return str(checkpoint_dir)


def check_loader(loader: Any, name: str) -> None:
    """``loader`` is an iterable of batches and, if it has a length, not empty."""
    if not isinstance(loader, Iterable):
        raise TypeError(f"{name} must be an iterable of batches, got {type(loader).__name__}")
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return
    if n == 0:
        raise ValueError(f"{name} is empty: it has no batches")


def check_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer, interval: str) -> None:
    """``scheduler`` steps ``optimizer`` and fits ``interval``."""
    if scheduler is None:
        return
    if not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must have a step() method, got {type(scheduler).__name__}")
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("scheduler was built for a different optimizer than the trainer's")
    if isinstance(scheduler, PLATEAU) and interval != "epoch":
        raise ValueError(
            "ReduceLROnPlateau needs scheduler_interval='epoch' (it steps on the "
            f"validation loss), got {interval!r}"
        )
