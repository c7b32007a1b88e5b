"""AdvancedTrainer: the guide's trainer with exact resume, no per-step host syncs, AMP,
gradient accumulation, non-finite handling, early stopping, logging and DDP.

A training step reads top to bottom: forward (autocast), backward (scaled), and on the
last micro-batch of an optimizer step: unscale, clip (always measuring the norm), check
for non-finite values, step, schedule, record. Recorded values stay on the device until
a log point (every ``log_interval`` optimizer steps and every epoch end).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiscope._internal.batches import batch_size
from optiscope.training import _distributed as ddp
from optiscope.training._checkpoint import check_writable_dir
from optiscope.training._clip import GlobalNormClip, apply_clipper
from optiscope.training._config import RunConfig, TrainerConfig
from optiscope.training._loggers import ProgressBar, tensorboard_installed
from optiscope.training._loop import LoopMixin, Run
from optiscope.training._metrics import MetricBuffer, StepRecord
from optiscope.training._nonfinite import NonFiniteMixin
from optiscope.training._state import CheckpointMixin
from optiscope.training._validate import ValidateMixin

__all__ = ["AdvancedTrainer"]

_PLATEAU = torch.optim.lr_scheduler.ReduceLROnPlateau


class AdvancedTrainer(LoopMixin, ValidateMixin, NonFiniteMixin, CheckpointMixin):
    """Train a model with schedules, clipping, tracking, checkpoints and exact resume.

    Args:
        model: The module to train (moved to ``device``).
        optimizer: Any torch optimizer over the model's parameters.
        loss_fn: ``loss_fn(output, target) -> scalar tensor`` (mean reduction).
        device: Where to train.
        precision: ``"32"``, ``"bf16"`` (autocast) or ``"16-mixed"`` (autocast fp16 with
            a GradScaler; gradients are unscaled before clipping).
        grad_accum_steps: Micro-batches per optimizer step (>= 1).
        nonfinite: What to do with a non-finite loss or gradient norm: ``"skip"`` the
            update (counted in ``skipped_steps``), ``"raise"`` FloatingPointError, or
            ``"ignore"``. Skip and raise read one value per optimizer step, except that a
            fused optimizer (``fused=True``) skips on the device via ``found_inf`` when
            no per-step scheduler runs; its skips are then counted at log points.
        max_consecutive_skips: Abort with FloatingPointError after this many skipped
            steps in a row.
        log_interval: Optimizer steps between log points (host copies, bar, files).
        seed: Seeds the per-epoch shuffling of the training loader, so that a resumed
            run sees the same batches; defaults to ``torch.initial_seed()``.
        run_dir: Directory for ``metrics.csv``/``metrics.jsonl`` (and checkpoints when
            ``train`` gets no ``checkpoint_dir``).
        progress_bar: Show a tqdm bar (None: only on a terminal).
        verbose: Print the guide's log lines and epoch summaries.
        tensorboard: Also write TensorBoard scalars to ``run_dir/tensorboard``; None
            (default) does so when ``run_dir`` is set and tensorboard is installed.
        callbacks: Objects with any of ``on_train_start``, ``on_step_end``,
            ``on_epoch_end``, ``on_train_end`` methods, each called with the trainer.
        task: How to score validation accuracy: ``"auto"``, ``"multiclass"``,
            ``"binary"`` or ``"regression"`` (no accuracy).

    Raises:
        ValueError: An argument is outside its allowed range or set.
        TypeError: An argument of the wrong kind.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> model = torch.nn.Linear(4, 3)
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
        >>> loader = DataLoader(data, batch_size=8, shuffle=True)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> trainer = AdvancedTrainer(model, opt, torch.nn.CrossEntropyLoss(), verbose=False)
        >>> trainer.train(loader, loader, epochs=2)
        >>> len(trainer.train_losses), len(trainer.grad_norms)
        (2, 8)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any,
        device: str | torch.device = "cpu",
        *,
        precision: str = "32",
        grad_accum_steps: int = 1,
        nonfinite: str = "skip",
        max_consecutive_skips: int = 10,
        log_interval: int = 100,
        seed: int | None = None,
        run_dir: str | os.PathLike | None = None,
        progress_bar: bool | None = None,
        verbose: bool = True,
        tensorboard: bool | None = None,
        callbacks: Sequence[Any] = (),
        task: str = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if seed is None:
            seed = torch.initial_seed() % (1 << 63)
        self.config = TrainerConfig(
            precision, grad_accum_steps, nonfinite, max_consecutive_skips, log_interval, seed, task
        )
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.run_dir = None if run_dir is None else Path(run_dir)
        if tensorboard and self.run_dir is None:
            raise ValueError("tensorboard=True needs run_dir")
        if tensorboard is None:
            tensorboard = self.run_dir is not None and tensorboard_installed()
        self.tensorboard = bool(tensorboard)
        self.verbose = verbose
        self.callbacks = list(callbacks)
        self.scaler = (
            torch.amp.GradScaler(self.device.type) if self.config.precision == "16-mixed" else None
        )
        self._bar = ProgressBar(progress_bar)
        # The guide's lists (filled at log points from host copies), plus a few more.
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.val_accuracies: list[float | None] = []
        self.learning_rates: list[float] = []
        self.grad_norms: list[float] = []
        self.step_losses: list[float] = []
        self.history: list[StepRecord] = []
        # Counters: optimizer steps applied, micro-batches done in the current epoch.
        self.epoch = 0
        self.global_step = 0
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.batch_in_epoch = 0
        self.micro_batch = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stop_training = False
        self._buffer = MetricBuffer()
        self._net: nn.Module = self.model
        self._run: Run | None = None
        self._writers: list[Any] = []
        self._resume: dict[str, Any] | None = None
        self._task: str | None = None if task == "auto" else task

    # ------------------------------------------------------------------ public API
    @property
    def seed(self) -> int:
        return self.config.seed

    def train(
        self,
        train_loader: Iterable,
        val_loader: Iterable | None,
        epochs: int,
        scheduler: Any = None,
        max_grad_norm: float | None = 1.0,
        *,
        clipper: Any = None,
        scheduler_interval: str = "step",
        checkpoint_dir: str | os.PathLike | None | bool = None,
        checkpoint_every_steps: int | None = None,
        resume: bool | str | os.PathLike = False,
        early_stopping_patience: int | None = None,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
    ) -> None:
        """Train for ``epochs`` epochs (the total, when resuming), validating after each.

        Args:
            train_loader: Iterable of ``(inputs, targets)`` batches (a DataLoader for
                reproducible shuffling and DDP).
            val_loader: Validation batches, or None to skip validation.
            epochs: Epochs to train (>= 1). When resuming it is the run's total, so the
                remaining epochs are trained.
            scheduler: Any torch LR scheduler (or optiscope ``ScheduleLR``).
            max_grad_norm: Clip the global L2 gradient norm to this; None only measures.
            clipper: Any optiscope clipper (overrides ``max_grad_norm``, which must then
                be left at 1.0 or None).
            scheduler_interval: ``"step"`` (once per applied optimizer step) or
                ``"epoch"`` (after validation; ReduceLROnPlateau gets the validation loss,
                or the training loss when there is no validation).
            checkpoint_dir: Where ``last.pt`` (every epoch) and ``best.pt`` go; defaults to
                ``run_dir``; False writes no checkpoints.
            checkpoint_every_steps: Also write ``last.pt`` every this many optimizer steps.
            resume: True to continue from ``checkpoint_dir/last.pt`` if it exists, or a
                checkpoint path.
            early_stopping_patience: Stop after this many epochs without improvement of
                ``monitor`` by more than ``min_delta``.
            monitor: ``"val_loss"``, ``"val_accuracy"`` or ``"train_loss"``.
            min_delta: Smallest change that counts as an improvement.

        Raises:
            ValueError: Bad settings, an empty loader, an unwritable checkpoint directory
                or a scheduler that does not fit the interval, all before training.
            FloatingPointError: Non-finite values with ``nonfinite="raise"``, or too many
                consecutive skipped steps.
        """
        if clipper is not None and max_grad_norm not in (None, 1.0):
            raise ValueError("pass either clipper= or max_grad_norm=, not both")
        if checkpoint_dir is False:  # run_dir given, but no checkpoints wanted
            ckpt_dir = None
        else:
            ckpt_dir = checkpoint_dir if checkpoint_dir is not None else self.run_dir
        run_cfg = RunConfig(
            epochs,
            None if clipper is not None else max_grad_norm,
            scheduler_interval,
            None if ckpt_dir is None else str(ckpt_dir),
            checkpoint_every_steps,
            early_stopping_patience,
            monitor,
            min_delta,
        )
        self._check_loader(train_loader, "train_loader")
        if val_loader is not None:
            self._check_loader(val_loader, "val_loader")
        elif monitor != "train_loss" and early_stopping_patience is not None:
            raise ValueError(f"monitor={monitor!r} needs a val_loader")
        self._check_scheduler(scheduler, scheduler_interval)
        for path in {run_cfg.checkpoint_path, self.run_dir} - {None}:
            check_writable_dir(
                path, "checkpoint_dir" if path == run_cfg.checkpoint_path else "run_dir"
            )
        if resume:
            self._load_for_resume(resume, run_cfg.checkpoint_path)
        clip = clipper if clipper is not None else GlobalNormClip(run_cfg.max_grad_norm)
        self._start_run(run_cfg, scheduler, clip)
        try:
            self.fit(train_loader, val_loader)
        finally:
            self._close_run()

    def fit(self, train_loader: Iterable, val_loader: Iterable | None) -> None:
        """The epoch loop of :meth:`train` (set up by it; call :meth:`train` instead)."""
        run = self._require_run()
        first = self.epoch + 1
        last = run.cfg.epochs if self._resume is not None else self.epoch + run.cfg.epochs
        if ddp.is_distributed():
            self._net = (
                ddp.wrap_ddp(self.model, self.device) if self._net is self.model else self._net
            )
            train_loader = ddp.distributed_loader(train_loader, self.seed)
        self.stop_training = False  # a previous run's early stop does not carry over
        self._open_writers()
        self._callback("on_train_start")
        if self.verbose and self._is_main:
            print(f"Training for {last - first + 1} epochs...\nDevice: {self.device}")
            print(f"Max gradient norm: {run.cfg.max_grad_norm}\n" + "-" * 70)
        for epoch in range(first, last + 1):
            self.train_epoch(train_loader, epoch, log_interval=self.config.log_interval)
            self._end_epoch(epoch, val_loader)
            if self.stop_training:
                break
        self._resume = None  # consumed (or nothing was left to train)
        self._callback("on_train_end")

    def train_epoch(
        self,
        train_loader: Iterable,
        epoch: int,
        scheduler: Any = None,
        max_grad_norm: float | None = None,
        log_interval: int = 100,
    ) -> float:
        """Train one epoch and return its mean training loss (the guide's signature).

        Inside :meth:`train` the run's scheduler and clipper are used; called on its own
        it steps ``scheduler`` per optimizer step and clips to ``max_grad_norm`` (None:
        only measure the norm).

        Args:
            train_loader: The batches.
            epoch: The epoch number (1-based), which also seeds the shuffling.
            scheduler: Stepped after every applied optimizer step (standalone use).
            max_grad_norm: Clipping threshold (standalone use).
            log_interval: Optimizer steps between log points (standalone use).

        Returns:
            The sample-weighted mean loss over the epoch's applied steps.
        """
        standalone = self._run is None
        if standalone:
            self._check_loader(train_loader, "train_loader")
            self._check_scheduler(scheduler, "step")
            cfg = RunConfig(max(epoch, 1), max_grad_norm)
            self._start_run(cfg, scheduler, GlobalNormClip(max_grad_norm), log_interval)
        try:
            self._run_epoch(train_loader, epoch)
            loss = self._epoch_train_loss()
            if standalone:
                self.train_losses.append(loss)
            return loss
        finally:
            if standalone:
                self._run = None

    def training_step(self, inputs: Any, targets: Any, loss_scale: float = 1.0) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns the detached loss."""
        with self._autocast():
            output = self._net(inputs)
            loss = self.loss_fn(output, targets)
        detached = loss.detach()
        n = inputs.shape[0] if type(inputs) is torch.Tensor else batch_size(inputs)
        self._buffer.add_micro_batch(detached, n)
        scaled = loss * loss_scale if loss_scale != 1.0 else loss
        if self.scaler is not None:
            scaled = self.scaler.scale(scaled)
        scaled.backward()
        self._callback("on_after_backward")
        return detached

    def optimizer_step(self, epoch: int) -> bool:
        """Unscale, clip, check, step and schedule; returns whether the update was applied."""
        run = self._require_run()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm, clipped = apply_clipper(run.clipper, run.params)
        self._callback("on_before_optimizer_step")
        lr = self.optimizer.param_groups[0]["lr"]
        lr = lr.detach().clone() if isinstance(lr, torch.Tensor) else lr
        found_inf = None
        bad = False
        if run.fused_skip:
            # A fused optimizer skips the update on the device when found_inf is 1, so
            # nothing is read here; skips are counted at the next log point.
            found_inf = ~torch.isfinite(norm + self._step_loss_sum())
        elif self.config.nonfinite != "ignore":
            # The one host read per step that skip/raise need (GradScaler does the same).
            # NaN or inf in either term makes the sum non-finite; one .item() of a float
            # is cheaper than isfinite() + bool() and syncs just the same.
            bad = not math.isfinite((norm + self._step_loss_sum()).item())
            if bad:
                self._handle_nonfinite(epoch)
        attempt = self.global_step + self.skipped_steps
        if not bad:
            self._apply_update(found_inf)
        elif self.scaler is not None:
            self.scaler.update()  # lowers the loss scale after an overflow
        skipped = None if found_inf is not None else bad
        self._buffer.end_step(attempt, epoch, norm, lr, clipped, skipped, found_inf)
        self.optimizer.zero_grad(set_to_none=True)
        return not bad

    def step_scheduler(self, interval: str, metric: float | None = None) -> None:
        """Step the run's scheduler if it runs at ``interval`` (``"step"``/``"epoch"``)."""
        run = self._require_run()
        if run.scheduler is None or run.interval != interval:
            return
        if isinstance(run.scheduler, _PLATEAU):
            run.scheduler.step(metric)
        else:
            run.scheduler.step()

    def plot_training_curves(
        self, path: str | os.PathLike | None = None, *, show: bool = False
    ) -> Any:
        """The guide's 2x2 figure: losses, learning rate, grad norms, log losses.

        Args:
            path: Save the figure here (PNG, PDF, ... by extension).
            show: Show the figure (pyplot ``show``).

        Returns:
            The matplotlib Figure.
        """
        from optiscope.training._plots import plot_training_curves

        return plot_training_curves(self, path=path, show=show)

    def lr_find(self, train_loader: Iterable, **kwargs: Any) -> Any:
        """LR range test on this trainer's model, optimizer and loss (see :func:`lr_find`).

        Model, optimizer and RNG states are restored afterwards.
        """
        from optiscope.training._lr_find import lr_find

        kwargs.setdefault("device", self.device)
        return lr_find(self.model, self.optimizer, self.loss_fn, train_loader, **kwargs)

    # ------------------------------------------------------------------ internals
    def _apply_update(self, found_inf: torch.Tensor | None = None) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif found_inf is not None:
            # The attribute GradScaler sets for fused optimizers (see GradScaler.step).
            self.optimizer.found_inf = found_inf.to(torch.float32)
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        else:
            self.optimizer.step()
        # Provisional on the fused path: a skip found at the log point takes it back.
        self.global_step += 1
        if found_inf is None:
            self.consecutive_skips = 0
        self.step_scheduler("step")
