"""The trainer's checkpoint: counters in one dataclass, and the plain dict written to disk.

A checkpoint is a plain dict of named states (nanoGPT's way): model, optimizer, scheduler,
GradScaler, clipper and callback states, the RNG states of every rank, the counters
(:class:`TrainState`), the history and the JSON-able config. It loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from optiscope.training._checkpoint import FORMAT_VERSION, CheckpointError

__all__ = [
    "KIND",
    "TrainState",
    "callback_states",
    "check_kind",
    "load_callback_states",
    "load_model_state",
    "model_mismatch",
    "state_of",
]

KIND = "optiscope.AdvancedTrainer"


@dataclass
class TrainState:
    """Where training stands: what resuming needs besides the objects' own states.

    Attributes:
        epoch: Epochs completed.
        global_step: Optimizer steps applied (skipped ones not counted).
        skipped_steps: Optimizer steps skipped for a non-finite loss or gradient.
        consecutive_skips: Skipped steps since the last applied one.
        batch_in_epoch: Micro-batches done in the current epoch.
        best_metric: Best monitored value so far (None before the first epoch end).
        best_epoch: The epoch it was reached at.
        bad_epochs: Epochs since it last improved.

    Example:
        >>> s = TrainState(global_step=3)
        >>> TrainState(**s.state_dict()) == s
        True
    """

    epoch: int = 0
    global_step: int = 0
    skipped_steps: int = 0
    consecutive_skips: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):
            setattr(self, f.name, state[f.name])

    def update_best(self, value: float | None, epoch: int, mode: str, min_delta: float) -> bool:
        """Count an epoch end: True when ``value`` beats the best by more than ``min_delta``."""
        if value is None or math.isnan(value):
            self.bad_epochs += 1
            return False
        sign = 1.0 if mode == "min" else -1.0
        if self.best_metric is None or sign * (self.best_metric - value) > min_delta:
            self.best_metric, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False


def check_kind(state: dict[str, Any], path: Any) -> None:
    """``state`` is a trainer checkpoint this version can read."""
    if state.get("kind") != KIND or "model" not in state:
        raise CheckpointError(f"{path} is not an optiscope AdvancedTrainer checkpoint")
    if int(state.get("format", 0)) != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')}, this optiscope reads "
            f"format {FORMAT_VERSION}"
        )


def model_mismatch(model: nn.Module, saved: dict[str, Any]) -> str | None:
    """How ``saved`` differs from ``model``'s state (names, shapes), or None if it fits."""
    own = model.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [
        f"{k}: {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in saved and hasattr(saved[k], "shape") and saved[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:5])}")
    if shapes:
        parts.append(f"shape mismatch {'; '.join(shapes[:5])} (checkpoint vs model)")
    return "; ".join(parts) or None


def load_model_state(model: nn.Module, saved: dict[str, Any], path: Any) -> None:
    """Load ``saved`` into ``model``, or say which names and shapes differ."""
    mismatch = model_mismatch(model, saved)
    if mismatch is not None:
        raise CheckpointError(f"{path} was saved from another model: {mismatch}")
    model.load_state_dict(saved)


def state_of(obj: Any) -> dict[str, Any] | None:
    """``obj.state_dict()`` if it has one (and it is not empty), else None."""
    if obj is None or not callable(getattr(obj, "state_dict", None)):
        return None
    return obj.state_dict() or None


def callback_states(callbacks: list[Any]) -> dict[str, Any]:
    """The states of the callbacks that have ``state_dict`` and ``load_state_dict``."""
    return {
        _callback_key(i, cb): cb.state_dict()
        for i, cb in enumerate(callbacks)
        if callable(getattr(cb, "state_dict", None))
        and callable(getattr(cb, "load_state_dict", None))
    }


def load_callback_states(callbacks: list[Any], saved: dict[str, Any]) -> None:
    """Give each callback the state saved for it (matched by position and class)."""
    for i, cb in enumerate(callbacks):
        key = _callback_key(i, cb)
        if key in saved and callable(getattr(cb, "load_state_dict", None)):
            cb.load_state_dict(saved[key])


def _callback_key(i: int, cb: Any) -> str:
    return f"{i}:{type(cb).__name__}"
