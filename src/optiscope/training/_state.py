"""Saving and loading the trainer's complete state (mixed into AdvancedTrainer).

A checkpoint is a plain dict: model, optimizer, scheduler, GradScaler and clipper states,
every RNG state, the counters (epoch, optimizer step, micro-batches into the current
epoch), the running epoch loss, the history lists and the JSON-able config.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from optiscope.training import _distributed as ddp
from optiscope.training._checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint_file,
    rng_state,
    save_checkpoint_file,
)
from optiscope.training._metrics import StepRecord

__all__ = ["CheckpointMixin"]

_KIND = "optiscope.AdvancedTrainer"
_COUNTERS = (
    "epoch",
    "global_step",
    "skipped_steps",
    "consecutive_skips",
    "batch_in_epoch",
    "bad_epochs",
    "best_metric",
    "best_epoch",
)
_LISTS = (
    "train_losses",
    "val_losses",
    "val_accuracies",
    "learning_rates",
    "grad_norms",
    "step_losses",
)


class CheckpointMixin:
    """``save_checkpoint`` / ``load_checkpoint`` and resume bookkeeping."""

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the complete training state to ``path`` atomically (rank 0 only).

        Pending step values are copied to the host first, so the history is complete.
        Under DDP call it on every rank (that copy is a collective); only rank 0 writes.

        Args:
            path: The checkpoint file (its directory is created).

        Returns:
            The path.

        Raises:
            CheckpointError: The directory cannot be written.
        """
        self._log_point()
        if self._is_main:
            save_checkpoint_file(self._checkpoint_state(), path)
        return Path(path)

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`save_checkpoint`; the next ``train`` resumes.

        Model, optimizer, GradScaler, counters and history are restored now; the
        scheduler's and clipper's states when ``train`` provides them; the RNG states when
        training restarts at the saved position (so shuffling and dropout continue
        exactly). The run's seed is taken from the checkpoint.

        Args:
            path: The checkpoint file.

        Returns:
            The checkpoint's config dict.

        Raises:
            CheckpointError: Missing, corrupt, not a trainer checkpoint, or saved from a
                model with other parameter names or shapes.
        """
        state = load_checkpoint_file(path)
        if state.get("kind") != _KIND or "model" not in state:
            raise CheckpointError(f"{path} is not an optiscope AdvancedTrainer checkpoint")
        if int(state.get("format", 0)) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path} was written by a newer optiscope (format {state['format']})"
            )
        self._load_model_state(state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: optimizer state does not fit this optimizer: {e}"
            ) from e
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for name in _COUNTERS:
            setattr(self, name, state["counters"][name])
        for name in _LISTS:
            setattr(self, name, _from_column(state["history"][name]))
        self.history = _records_from_columns(state["history"]["steps"])
        self._buffer.load_state_dict(state["metrics"])
        self._adopt_config(state["config"]["trainer"], path)
        _load_callback_states(self.callbacks, state.get("callbacks") or {}, path)
        self._resume = {
            "epoch": self.epoch + 1,
            "start": self.batch_in_epoch,
            "rng": state["rng"],
            "scheduler": state.get("scheduler"),
            "clipper": state.get("clipper"),
        }
        if self._run is not None:
            self._apply_pending_states()
        return state["config"]

    # ------------------------------------------------------------------ internals
    def _checkpoint_state(self) -> dict[str, Any]:
        run = self._run
        scheduler = run.scheduler if run is not None else None
        clipper = run.clipper if run is not None else None
        return {
            "kind": _KIND,
            "format": FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": _state_of(scheduler),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "clipper": _state_of(clipper),
            "rng": rng_state(),
            "callbacks": _callback_states(self.callbacks),
            "counters": {name: getattr(self, name) for name in _COUNTERS},
            "metrics": self._buffer.state_dict(),
            "history": {
                **{name: _to_column(getattr(self, name)) for name in _LISTS},
                "steps": _records_to_columns(self.history),
            },
            "config": {
                "trainer": self.config.as_dict(),
                "run": None if run is None else run.cfg.as_dict(),
                "model_class": type(self.model).__name__,
                "optimizer_class": type(self.optimizer).__name__,
                "scheduler_class": None if scheduler is None else type(scheduler).__name__,
                "world_size": ddp.world_size(),
            },
        }

    def _load_model_state(self, saved: dict[str, Any], path: Any) -> None:
        own = self.model.state_dict()
        missing = sorted(set(own) - set(saved))
        unexpected = sorted(set(saved) - set(own))
        shapes = [
            f"{k}: {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
            for k in own
            if k in saved and hasattr(saved[k], "shape") and saved[k].shape != own[k].shape
        ]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:5])}")
            if unexpected:
                parts.append(f"unexpected {', '.join(unexpected[:5])}")
            if shapes:
                parts.append(f"shape mismatch {'; '.join(shapes[:5])} (checkpoint vs model)")
            raise CheckpointError(f"{path} was saved from another model: {'; '.join(parts)}")
        self.model.load_state_dict(saved)

    def _adopt_config(self, saved: dict[str, Any], path: Any) -> None:
        # The seed decides the shuffling, so exact resume needs the checkpoint's.
        self.config = dataclasses.replace(self.config, seed=int(saved["seed"]))
        differ = [
            k for k in ("precision", "grad_accum_steps") if saved.get(k) != getattr(self.config, k)
        ]
        if differ:
            warnings.warn(
                f"{path} was trained with different {', '.join(differ)}; resuming will not "
                "reproduce the uninterrupted run exactly",
                stacklevel=3,
            )

    def _apply_pending_states(self) -> None:
        pending = self._resume
        run = self._run
        if pending is None or run is None:
            return
        for key, obj in (("scheduler", run.scheduler), ("clipper", run.clipper)):
            saved = pending.pop(key, None)
            if saved is None:
                continue
            if obj is None or not hasattr(obj, "load_state_dict"):
                warnings.warn(
                    f"the checkpoint has a {key} state but train() got no {key}", stacklevel=4
                )
                continue
            obj.load_state_dict(saved)

    def _load_for_resume(self, resume: Any, checkpoint_dir: Path | None) -> None:
        if resume is True:
            if checkpoint_dir is None:
                raise ValueError("resume=True needs checkpoint_dir (or run_dir)")
            path = checkpoint_dir / "last.pt"
            if not path.exists():
                return  # nothing to resume yet: a fresh run (what a restarted job wants)
        else:
            path = Path(resume)
        self.load_checkpoint(path)


def _callback_key(i: int, cb: Any) -> str:
    return f"{i}:{type(cb).__name__}"


def _callback_states(callbacks: list[Any]) -> dict[str, Any]:
    return {
        _callback_key(i, cb): cb.state_dict()
        for i, cb in enumerate(callbacks)
        if callable(getattr(cb, "state_dict", None))
        and callable(getattr(cb, "load_state_dict", None))
    }


def _load_callback_states(callbacks: list[Any], saved: dict[str, Any], path: Any) -> None:
    for i, cb in enumerate(callbacks):
        key = _callback_key(i, cb)
        if key in saved and callable(getattr(cb, "load_state_dict", None)):
            cb.load_state_dict(saved[key])


def _state_of(obj: Any) -> dict[str, Any] | None:
    if obj is None or not hasattr(obj, "state_dict"):
        return None
    state = obj.state_dict()
    return state or None


# Per-step history is stored as tensor columns: saving a long run's checkpoint every few
# steps stays cheap (no per-step dicts to pickle), and float64 round-trips exactly.
def _to_column(values: list[Any]) -> Any:
    if values and all(isinstance(v, float) for v in values):
        return torch.tensor(values, dtype=torch.float64)
    return list(values)  # short per-epoch lists, possibly holding None


def _from_column(column: Any) -> list[Any]:
    return column.tolist() if isinstance(column, torch.Tensor) else list(column)


def _records_to_columns(records: list[StepRecord]) -> dict[str, torch.Tensor]:
    def col(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([getattr(r, name) for r in records], dtype=dtype)

    return {
        "step": col("step", torch.int64),
        "epoch": col("epoch", torch.int64),
        "loss": col("loss", torch.float64),
        "grad_norm": col("grad_norm", torch.float64),
        "lr": col("lr", torch.float64),
        # -1: the clipper did not say.
        "clipped": torch.tensor(
            [-1 if r.clipped is None else int(r.clipped) for r in records], dtype=torch.int8
        ),
        "skipped": col("skipped", torch.bool),
    }


def _records_from_columns(columns: dict[str, torch.Tensor]) -> list[StepRecord]:
    lists = {k: v.tolist() for k, v in columns.items()}
    return [
        StepRecord(step, epoch, loss, norm, lr, None if clip < 0 else bool(clip), skipped)
        for step, epoch, loss, norm, lr, clip, skipped in zip(
            lists["step"],
            lists["epoch"],
            lists["loss"],
            lists["grad_norm"],
            lists["lr"],
            lists["clipped"],
            lists["skipped"],
        )
    ]
