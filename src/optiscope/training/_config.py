"""The trainer's settings, checked once before any training, and kept JSON-able."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from optiscope._internal.accuracy import TASKS

__all__ = ["TrainerConfig", "RunConfig", "PRECISIONS", "NONFINITE", "INTERVALS", "MONITORS"]

PRECISIONS = ("32", "bf16", "16-mixed")
NONFINITE = ("skip", "raise", "ignore")
INTERVALS = ("step", "epoch")
MONITORS = ("val_loss", "val_accuracy", "train_loss")

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


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
        _choice("precision", self.precision, PRECISIONS)
        _positive_int("grad_accum_steps", self.grad_accum_steps)
        _choice("nonfinite", self.nonfinite, NONFINITE)
        _positive_int("max_consecutive_skips", self.max_consecutive_skips)
        _positive_int("log_interval", self.log_interval)
        _positive_int("seed", self.seed, minimum=0)
        _choice("task", self.task, TASKS)

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
        _positive_int("epochs", self.epochs)
        if self.max_grad_norm is not None:
            if not isinstance(self.max_grad_norm, (int, float)) or isinstance(
                self.max_grad_norm, bool
            ):
                raise TypeError(
                    f"max_grad_norm must be a number or None, got {self.max_grad_norm!r}"
                )
            if math.isnan(self.max_grad_norm) or self.max_grad_norm <= 0:
                raise ValueError(f"max_grad_norm must be > 0 (or None), got {self.max_grad_norm!r}")
        _choice("scheduler_interval", self.scheduler_interval, INTERVALS)
        if self.checkpoint_every_steps is not None:
            _positive_int("checkpoint_every_steps", self.checkpoint_every_steps)
            if self.checkpoint_dir is None:
                raise ValueError("checkpoint_every_steps needs checkpoint_dir (or run_dir)")
        if self.early_stopping_patience is not None:
            _positive_int("early_stopping_patience", self.early_stopping_patience)
        _choice("monitor", self.monitor, MONITORS)
        if not (isinstance(self.min_delta, (int, float)) and self.min_delta >= 0):
            raise ValueError(f"min_delta must be a number >= 0, got {self.min_delta!r}")

    @property
    def monitor_mode(self) -> str:
        return "max" if self.monitor == "val_accuracy" else "min"

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else Path(self.checkpoint_dir)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
