"""Validation and argument checks of AdvancedTrainer (mixed into it).

Validation accumulates loss and correct counts on the device and copies them to the host
once, at the end; the checks run before any training so bad input fails early.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from optiscope._internal.accuracy import count_correct, infer_task
from optiscope._internal.batches import batch_size

__all__ = ["ValidateMixin"]

_PLATEAU = torch.optim.lr_scheduler.ReduceLROnPlateau


class ValidateMixin:
    """``validate`` and the loader/scheduler checks."""

    @torch.no_grad()
    def validate(self, val_loader: Iterable) -> tuple[float, float | None]:
        """Mean loss and accuracy over ``val_loader`` in eval mode (one host copy).

        Accuracy is for multi-class logits (argmax), a single binary logit (> 0) or a
        BCELoss probability (> 0.5); it is None for regression.

        Returns:
            ``(loss, accuracy)``, also appended to ``val_losses``/``val_accuracies``.

        Raises:
            ValueError: ``val_loader`` is empty.
        """
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        counted: torch.Tensor | int = 0
        n = 0
        try:
            for inputs, targets in self._batches(val_loader):
                with self._autocast():
                    output = self.model(inputs)
                    loss = self.loss_fn(output, targets)
                m = batch_size(inputs)
                loss_sum += loss.detach().double() * m
                if self._task is None:
                    self._task = infer_task(self.loss_fn, output, targets)
                scored = count_correct(output, targets, self._task)
                if scored is not None:
                    correct += scored[0]
                    counted = counted + scored[1]
                n += m
        finally:
            self.model.train(was_training)
        if n == 0:
            raise ValueError("val_loader is empty: it yielded no batches")
        counted = torch.as_tensor(counted, device=self.device, dtype=torch.float64)
        total_loss, total_correct, total_counted = torch.stack(
            [loss_sum, correct, counted]
        ).tolist()
        val_loss = total_loss / n
        accuracy = None if total_counted == 0 else total_correct / total_counted
        self.val_losses.append(val_loss)
        self.val_accuracies.append(accuracy)
        return val_loss, accuracy

    def _check_loader(self, loader: Any, name: str) -> None:
        if not isinstance(loader, Iterable):
            raise TypeError(f"{name} must be an iterable of (inputs, targets) batches")
        try:
            n = len(loader)  # type: ignore[arg-type]
        except TypeError:
            return
        if n == 0:
            raise ValueError(f"{name} is empty: it has no batches")

    def _check_scheduler(self, scheduler: Any, interval: str) -> None:
        if scheduler is None:
            return
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"scheduler must have a step() method, got {type(scheduler).__name__}")
        if getattr(scheduler, "optimizer", self.optimizer) is not self.optimizer:
            raise ValueError("scheduler was built for a different optimizer than the trainer's")
        if isinstance(scheduler, _PLATEAU) and interval != "epoch":
            raise ValueError(
                "ReduceLROnPlateau needs scheduler_interval='epoch' (it steps on the "
                f"validation loss), got {interval!r}"
            )
