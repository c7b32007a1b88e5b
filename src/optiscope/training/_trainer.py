"""AdvancedTrainer: the guide's trainer with exact resume, AMP, accumulation, clipping,
non-finite handling, early stopping, logging, callbacks and DDP.

One optimizer step reads top to bottom in :meth:`AdvancedTrainer.train_epoch` (the loop)
and :meth:`AdvancedTrainer.optimizer_step`: forward under autocast and backward for each
micro-batch, then unscale, clip (always measuring the norm), check for non-finite values,
step, schedule, record. What it records (:class:`History`), where it stands
(:class:`TrainState`, the checkpoint counters) and what it shows (:class:`RunLog`) are
objects it holds.

Host syncs: recorded values stay on the device until a log point (every
``log_interval`` optimizer steps, each epoch end, each checkpoint). The one exception is
``nonfinite="skip"`` (the default) and ``"raise"``: deciding whether to apply an update
needs one value on the host per optimizer step, as GradScaler needs it; with
``nonfinite="ignore"`` a step reads nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiscope._internal.accuracy import count_correct, infer_task
from optiscope._internal.restore import RNGState
from optiscope.batch_loss import Evaluated, ModelLoss, TargetLoss, as_batch_loss, logits_of
from optiscope.batch_loss import to_device as _to_device
from optiscope.clipping import ClipResult, NoClip, NormClip
from optiscope.training import _distributed as ddp
from optiscope.training import _state
from optiscope.training._checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    check_writable_dir,
    load_checkpoint_file,
    save_checkpoint_file,
)
from optiscope.training._config import (
    PLATEAU,
    RunConfig,
    TrainerConfig,
    check_loader,
    check_scheduler,
    checkpoint_directory,
)
from optiscope.training._loggers import ProgressBar, RunLog, tensorboard_installed
from optiscope.training._metrics import History, View
from optiscope.training._sampling import seed_epoch_sampler
from optiscope.training._state import TrainState

__all__ = ["AdvancedTrainer"]

# nullcontext is reusable; one instance saves an allocation per micro-batch.
_NO_CONTEXT = contextlib.nullcontext()


class _GuideDefault(float):
    """The guide's ``max_grad_norm=1.0``, told apart from an explicit 1.0."""

    def __repr__(self) -> str:
        return "1.0"


_DEFAULT_NORM = _GuideDefault(1.0)


@dataclasses.dataclass
class _Run:
    """The settings and objects of one ``train()`` (or standalone ``train_epoch``) call."""

    cfg: RunConfig
    scheduler: Any
    clipper: Any
    params: list[nn.Parameter]
    log_interval: int
    log: RunLog


def _counter(name: str) -> property:
    return property(lambda self: getattr(self.state, name), doc=f"``state.{name}``.")


class AdvancedTrainer:
    """Train a model with schedules, clipping, tracking, checkpoints and exact resume.

    Args:
        model: The module to train (moved to ``device``).
        optimizer: Any torch optimizer over the model's parameters.
        loss_fn: ``loss_fn(output, target) -> scalar`` (mean reduction; the guide's way),
            a :class:`~optiscope.batch_loss.BatchLoss`, or None when the model computes
            its own loss (``.loss`` or ``["loss"]`` of its output).
        device: Where to train.
        precision: ``"32"``, ``"bf16"`` (autocast) or ``"16-mixed"`` (autocast fp16 with
            a GradScaler; gradients are unscaled before clipping).
        grad_accum_steps: Micro-batches per optimizer step (>= 1).
        nonfinite: What to do with a non-finite loss or gradient norm: ``"skip"`` the
            update (counted in ``skipped_steps``), ``"raise"`` FloatingPointError, or
            ``"ignore"``. Skip and raise read one value on the host per optimizer step
            (one device sync, as GradScaler does); ignore reads none.
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
        callbacks: Objects with any of the hooks ``on_train_start``, ``on_after_backward``
            (after each micro-batch's backward; ``trainer.micro_batch`` is its index in
            the optimizer step), ``on_before_optimizer_step`` (gradients unscaled and
            clipped), ``on_step_end`` (after the update and scheduler), ``on_log`` (at
            log points), ``on_epoch_end``, ``on_train_end``, each called with the
            trainer. Callbacks with ``state_dict``/``load_state_dict`` are checkpointed.
        task: How to score validation accuracy: ``"auto"``, ``"multiclass"``,
            ``"binary"``, ``"binary_prob"`` or ``"regression"`` (no accuracy).

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

    # Where training stands (read-only; the checkpoint's counters live in ``state``).
    epoch = _counter("epoch")
    global_step = _counter("global_step")
    skipped_steps = _counter("skipped_steps")
    consecutive_skips = _counter("consecutive_skips")
    batch_in_epoch = _counter("batch_in_epoch")
    best_metric = _counter("best_metric")
    best_epoch = _counter("best_epoch")
    bad_epochs = _counter("bad_epochs")

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
        self.batch_loss = as_batch_loss(loss_fn)
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
        self.progress_bar = progress_bar
        self.callbacks = list(callbacks)
        self.scaler = (
            torch.amp.GradScaler(self.device.type) if self.config.precision == "16-mixed" else None
        )
        self.metrics = History()
        self.state = TrainState()
        self.micro_batch = 0  # index of the current micro-batch within its optimizer step
        self.stop_training = False
        self._net: nn.Module = self.model  # the DDP wrapper under torch.distributed
        self._run: _Run | None = None
        self._resume: dict[str, Any] | None = None

    # ------------------------------------------------------------ the guide's lists
    @property
    def train_losses(self) -> View:
        """Mean training loss of each epoch (read-only view of ``metrics``)."""
        return View(self.metrics.train_losses)

    @property
    def val_losses(self) -> View:
        return View(self.metrics.val_losses)

    @property
    def val_accuracies(self) -> View:
        return View(self.metrics.val_accuracies)

    @property
    def history(self) -> View:
        """One :class:`StepRecord` per optimizer step that reached the host."""
        return View(self.metrics.steps)

    @property
    def step_losses(self) -> View:
        return View(self.metrics.steps, "loss")

    @property
    def learning_rates(self) -> View:
        return View(self.metrics.steps, "lr")

    @property
    def grad_norms(self) -> View:
        return View(self.metrics.steps, "grad_norm")

    @property
    def seed(self) -> int:
        return self.config.seed

    # ------------------------------------------------------------ the loop
    def train(
        self,
        train_loader: Iterable,
        val_loader: Iterable | None,
        epochs: int,
        scheduler: Any = None,
        max_grad_norm: float | None = _DEFAULT_NORM,
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
            train_loader: Iterable of batches in any layout the loss understands (a
                DataLoader for reproducible shuffling and DDP).
            val_loader: Validation batches, or None to skip validation.
            epochs: Epochs to train (>= 1). When resuming it is the run's total, so the
                remaining epochs are trained.
            scheduler: Any torch LR scheduler (or optiscope ``ScheduleLR``).
            max_grad_norm: Clip the global L2 gradient norm to this; None only measures.
            clipper: Any optiscope clipper, or a torch-style function returning the norm,
                instead of ``max_grad_norm`` (which must then be left out or None).
            scheduler_interval: ``"step"`` (once per applied optimizer step) or
                ``"epoch"`` (after validation; ReduceLROnPlateau gets the validation loss,
                or the training loss when there is no validation).
            checkpoint_dir: Where ``last.pt`` (every epoch) and ``best.pt`` go; None uses
                ``run_dir``; False writes no checkpoints.
            checkpoint_every_steps: Also write ``last.pt`` every this many optimizer steps.
            resume: True to continue from ``checkpoint_dir/last.pt`` if it exists, or a
                checkpoint path.
            early_stopping_patience: Stop after this many epochs without improvement of
                ``monitor`` by more than ``min_delta``.
            monitor: ``"val_loss"``, ``"val_accuracy"`` or ``"train_loss"``.
            min_delta: Smallest change that counts as an improvement.

        Raises:
            ValueError: Bad settings (``clipper`` together with ``max_grad_norm``
                included), an empty loader, an unwritable checkpoint directory or a
                scheduler that does not fit the interval, all before training.
            TypeError: An argument of the wrong kind (``checkpoint_dir=True``).
            FloatingPointError: Non-finite values with ``nonfinite="raise"``, or too many
                consecutive skipped steps.
        """
        if clipper is not None and max_grad_norm is not None:
            if max_grad_norm is not _DEFAULT_NORM:
                raise ValueError("pass either clipper= or max_grad_norm=, not both")
            max_grad_norm = None
        cfg = RunConfig(
            epochs,
            None if max_grad_norm is None else float(max_grad_norm),
            scheduler_interval,
            checkpoint_directory(checkpoint_dir, self.run_dir),
            checkpoint_every_steps,
            early_stopping_patience,
            monitor,
            min_delta,
        )
        check_loader(train_loader, "train_loader")
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
        elif monitor != "train_loss" and early_stopping_patience is not None:
            raise ValueError(f"monitor={monitor!r} needs a val_loader")
        check_scheduler(scheduler, self.optimizer, scheduler_interval)
        for path, what in ((cfg.checkpoint_path, "checkpoint_dir"), (self.run_dir, "run_dir")):
            if path is not None:
                check_writable_dir(path, what)
        if resume:
            self._load_for_resume(resume, cfg.checkpoint_path)
        first = self.epoch + 1
        last = cfg.epochs if self._resume is not None else self.epoch + cfg.epochs
        if ddp.is_distributed():
            if self._net is self.model:
                self._net = ddp.wrap_ddp(self.model, self.device)
            train_loader = ddp.distributed_loader(train_loader, self.seed)
        self._open_run(cfg, scheduler, clipper, self.config.log_interval)
        try:
            self.stop_training = False  # a previous run's early stop does not carry over
            self._callback("on_train_start")
            self._require_run().log.start(last - first + 1, self.device, cfg.max_grad_norm)
            for epoch in range(first, last + 1):
                train_loss = self.train_epoch(train_loader, epoch)
                self._end_epoch(epoch, train_loss, val_loader)
                if self.stop_training:
                    break
            self._resume = None  # consumed (or nothing was left to train)
            self._callback("on_train_end")
        finally:
            self._close_run()

    def train_epoch(
        self,
        train_loader: Iterable,
        epoch: int,
        scheduler: Any = None,
        max_grad_norm: float | None = None,
        log_interval: int | None = None,
    ) -> float:
        """Train one epoch and return its mean training loss (the guide's signature).

        Called on its own it steps ``scheduler`` after every applied optimizer step,
        clips to ``max_grad_norm`` (None: only measure the norm) and logs every
        ``log_interval`` steps (None: the trainer's). :meth:`train` calls it with only
        the loader and epoch; its run's scheduler, clipper and interval then apply.

        Args:
            train_loader: The batches.
            epoch: The epoch number (1-based), which also seeds the shuffling.
            scheduler: Stepped after every applied optimizer step (standalone use).
            max_grad_norm: Clipping threshold (standalone use).
            log_interval: Optimizer steps between log points (standalone use).

        Returns:
            The sample-weighted mean loss over the epoch's applied steps.

        Raises:
            ValueError: Scheduler, clipping or log settings given while :meth:`train`
                runs (they would be ignored).
        """
        if self._run is None:
            return self._standalone_epoch(
                train_loader, epoch, scheduler, max_grad_norm, log_interval
            )
        if scheduler is not None or max_grad_norm is not None or log_interval is not None:
            raise ValueError(
                "train_epoch() inside train() uses the run's scheduler, clipper and "
                "log_interval; call it as train_epoch(loader, epoch)"
            )
        run = self._require_run()
        start = self._begin_epoch(train_loader, epoch)
        batches = iter(self._batches(train_loader))
        if start:
            # Consume the already-trained batches (loading only), then restore the RNG:
            # creating the iterator and loading drew from it.
            next(itertools.islice(batches, start - 1, None), None)
            self._resume_rng()
        accum, total = self.config.grad_accum_steps, _length(train_loader)
        self.optimizer.zero_grad(set_to_none=True)
        for batch in batches:
            self.micro_batch = self.state.batch_in_epoch % accum
            group_start = self.state.batch_in_epoch - self.micro_batch
            group = accum if total is None else min(accum, total - group_start)
            last = self.micro_batch + 1 == group
            with self._no_sync(not last):  # DDP: all-reduce once per optimizer step
                self.training_step(batch, 1.0 / group)
            self.state.batch_in_epoch += 1
            if last:
                self._finish_step(epoch, group)
        if self.state.batch_in_epoch % accum and total is None:
            # A loader without len() ended inside an accumulation group: step on what we have.
            self._finish_step(epoch, self.state.batch_in_epoch % accum)
        run.log.bar.close()
        return self._epoch_train_loss()

    def training_step(self, batch: Any, loss_scale: float = 1.0) -> torch.Tensor:
        """Forward (under autocast) and backward of one micro-batch; the detached loss."""
        with self._autocast():
            loss = self._evaluate(self._net, batch)
        detached = loss.loss.detach()
        self.metrics.add_micro_batch(detached, loss.size)
        scaled = loss.loss * loss_scale if loss_scale != 1.0 else loss.loss
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
        norm, clip = _clip(run.clipper, run.params)
        self._callback("on_before_optimizer_step")
        lr = self.optimizer.param_groups[0]["lr"]
        lr = lr.detach().clone() if isinstance(lr, torch.Tensor) else lr
        attempt = self.global_step + self.skipped_steps
        bad = False
        if self.config.nonfinite != "ignore":
            # The one host read per step that skip/raise need (GradScaler does the same):
            # NaN or inf in the norm or any micro-batch loss makes the sum non-finite.
            bad = not math.isfinite((norm + self.metrics.step_loss_sum()).item())
        if bad:
            self._count_skip(attempt, epoch)
            if self.scaler is not None:
                self.scaler.update()  # lowers the loss scale after an overflow
        else:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.state.global_step += 1
            self.state.consecutive_skips = 0
            self.step_scheduler("step")
        self.metrics.end_step(attempt, epoch, norm, clip, lr, bad)
        self.optimizer.zero_grad(set_to_none=True)
        return not bad

    @torch.no_grad()
    def validate(self, val_loader: Iterable) -> tuple[float, float | None]:
        """Mean loss and accuracy over ``val_loader`` in eval mode (one host copy).

        Accuracy follows ``optiscope._internal.accuracy``: argmax of multi-class and
        token-level logits (labels -100 not scored), a single binary logit (> 0), a
        BCELoss probability (> 0.5). It is None for regression and wherever it cannot be
        computed (no logits or labels, or a model-computed loss with per-token logits
        whose label shift is unknown). Under torch.distributed each rank validates its
        share of a DataLoader and the sums are all-reduced.

        Returns:
            ``(loss, accuracy)``, also appended to ``val_losses``/``val_accuracies``.

        Raises:
            ValueError: ``val_loader`` is empty.
        """
        loader, sharded = ddp.validation_shard(val_loader)
        was_training = self.model.training
        self.model.eval()
        # loss * samples, correct, scored, samples: summed on the device.
        sums = torch.zeros(4, device=self.device, dtype=torch.float64)
        try:
            for batch in self._batches(loader):
                with self._autocast():
                    ev = self._evaluate(self.model, batch)
                sums[0] += ev.loss.detach().double() * ev.size
                sums[3] += ev.size
                scored = self._score(ev)
                if scored is not None:
                    sums[1] += scored[0]
                    sums[2] += scored[1]
        finally:
            self.model.train(was_training)
        totals = sums.tolist()
        if sharded:
            totals = ddp.all_reduce_sum(totals, self.device)
        loss_sum, correct, counted, n = totals
        if n == 0:
            raise ValueError("val_loader is empty: it yielded no batches")
        val_loss, accuracy = loss_sum / n, None if counted == 0 else correct / counted
        self.metrics.val_losses.append(val_loss)
        self.metrics.val_accuracies.append(accuracy)
        return val_loss, accuracy

    def step_scheduler(self, interval: str, metric: float | None = None) -> None:
        """Step the run's scheduler if it runs at ``interval`` (``"step"``/``"epoch"``)."""
        run = self._require_run()
        if run.scheduler is None or run.cfg.scheduler_interval != interval:
            return
        if isinstance(run.scheduler, PLATEAU):
            run.scheduler.step(metric)
        else:
            run.scheduler.step()

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the complete training state to ``path`` atomically (rank 0 writes).

        Pending step values are copied to the host first, so the history is complete.
        Under DDP call it on every rank (that copy and the RNG gather are collectives).

        Args:
            path: The checkpoint file (its directory is created).

        Returns:
            The path.

        Raises:
            CheckpointError: The directory cannot be written.
        """
        self._log_point()
        rngs = ddp.all_gather_object(RNGState.capture().state_dict())
        if ddp.rank() == 0:
            run = self._run
            state = {
                "kind": _state.KIND,
                "format": FORMAT_VERSION,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": _state.state_of(run.scheduler if run else None),
                "scaler": _state.state_of(self.scaler),
                "clipper": _state.state_of(run.clipper if run else None),
                "callbacks": _state.callback_states(self.callbacks),
                "rng": rngs[0],
                "rng_ranks": rngs,
                "counters": self.state.state_dict(),
                "history": self.metrics.state_dict(),
                "config": {
                    "trainer": self.config.as_dict(),
                    "run": None if run is None else run.cfg.as_dict(),
                    "model_class": type(self.model).__name__,
                    "optimizer_class": type(self.optimizer).__name__,
                    "world_size": ddp.world_size(),
                },
            }
            save_checkpoint_file(state, path)
        return Path(path)

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`save_checkpoint`; the next ``train`` resumes.

        Model, optimizer, GradScaler, callbacks, counters and history are restored now;
        the scheduler's and clipper's states when ``train`` provides them; the RNG states
        (this rank's) when training restarts at the saved position, so shuffling and
        dropout continue exactly. The run's seed is taken from the checkpoint.

        Args:
            path: The checkpoint file.

        Returns:
            The checkpoint's config dict.

        Raises:
            CheckpointError: Missing, corrupt, not a trainer checkpoint, or saved from a
                model with other parameter names or shapes.
        """
        state = load_checkpoint_file(path)
        _state.check_kind(state, path)
        _state.load_model_state(self.model, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: optimizer state does not fit this optimizer: {e}"
            ) from e
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        _state.load_callback_states(self.callbacks, state["callbacks"])
        self.state.load_state_dict(state["counters"])
        self.metrics.load_state_dict(state["history"])
        self._adopt_config(state["config"], path)
        rngs = state["rng_ranks"]
        self._resume = {
            "epoch": self.epoch + 1,
            "start": self.batch_in_epoch,
            "rng": RNGState.from_state_dict(
                rngs[ddp.rank()] if len(rngs) == ddp.world_size() else rngs[0]
            ),
            "scheduler": state["scheduler"],
            "clipper": state["clipper"],
        }
        if self._run is not None:
            self._apply_pending_states()
        return state["config"]

    # ------------------------------------------------------------ callbacks' scalars
    @property
    def logs_scalars(self) -> bool:
        """Whether :meth:`log_scalars` writes anywhere: a run is open with TensorBoard on
        (and this is the main rank). Callbacks check it before preparing scalars."""
        return self._run is not None and self._run.log.takes_scalars

    def log_scalars(self, items: Iterable[tuple[str, float, int]]) -> None:
        """Write ``(tag, value, step)`` scalars to the run's TensorBoard, next to the
        trainer's own; does nothing without one. For callbacks, at ``on_log``."""
        if self._run is not None and self._run.log.takes_scalars:
            self._run.log.scalars(list(items))

    # ------------------------------------------------------------ conveniences
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

    # ------------------------------------------------------------ internals
    def _finish_step(self, epoch: int, micro_batches: int) -> None:
        run = self._require_run()
        applied = self.optimizer_step(epoch)
        run.log.bar.advance(micro_batches)
        if len(self.metrics.pending) >= run.log_interval:
            self._log_point()
        every = run.cfg.checkpoint_every_steps
        if applied and every is not None and self.global_step % every == 0:
            self.save_checkpoint(run.cfg.checkpoint_path / "last.pt")
        self._callback("on_step_end")

    def _evaluate(self, net: nn.Module, batch: Any) -> Evaluated:
        return self.batch_loss.evaluate(net, batch)

    def _score(self, ev: Evaluated) -> tuple[torch.Tensor, Any] | None:
        logits = logits_of(ev.output)
        if logits is None or not isinstance(ev.target, torch.Tensor):
            return None
        if isinstance(self.batch_loss, ModelLoss) and logits.dim() >= 3:
            return None  # per-token logits of a model's own loss: the label shift is unknown
        task = self.config.task
        if task == "auto":
            loss_fn = self.batch_loss.loss_fn if isinstance(self.batch_loss, TargetLoss) else None
            task = infer_task(loss_fn, logits, ev.target)
        return count_correct(logits, ev.target, task)

    def _count_skip(self, step: int, epoch: int) -> None:
        if self.config.nonfinite == "raise":
            raise FloatingPointError(
                f"non-finite loss or gradient at optimizer step {step} (epoch {epoch}, "
                f"batch {self.batch_in_epoch}); use nonfinite='skip' to skip such steps"
            )
        self.state.skipped_steps += 1
        self.state.consecutive_skips += 1
        if self.consecutive_skips >= self.config.max_consecutive_skips:
            raise FloatingPointError(
                f"aborting: {self.consecutive_skips} consecutive optimizer steps had a "
                f"non-finite loss or gradient (last at step {step}, epoch {epoch}); lower the "
                "learning rate or check the data"
            )

    def _log_point(self) -> None:
        # Under DDP every rank reaches each log point together (same number of steps).
        records = self.metrics.flush(ddp.all_reduce_mean if ddp.is_distributed() else None)
        if not records:
            return
        self._callback("on_log")
        if self._run is not None:
            self._run.log.steps(records)

    def _epoch_train_loss(self) -> float:
        self._log_point()
        s, n = ddp.all_reduce_sum(
            [self.metrics.epoch_loss_sum, float(self.metrics.epoch_samples)], self.device
        )
        return s / n if n else math.nan

    def _end_epoch(self, epoch: int, train_loss: float, val_loader: Iterable | None) -> None:
        run = self._require_run()
        self.metrics.train_losses.append(train_loss)
        val_loss, val_acc = self.validate(val_loader) if val_loader is not None else (None, None)
        self.metrics.reset_epoch()
        self.state.epoch, self.state.batch_in_epoch = epoch, 0
        values = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}
        monitored, mode = values[run.cfg.monitor], run.cfg.monitor_mode
        if val_loader is None:
            monitored, mode = train_loss, "min"  # without validation: lowest train loss
        self.step_scheduler("epoch", val_loss if val_loss is not None else train_loss)
        improved = self.state.update_best(monitored, epoch, mode, run.cfg.min_delta)
        if run.cfg.checkpoint_path is not None:
            self.save_checkpoint(run.cfg.checkpoint_path / "last.pt")
            if improved:
                self.save_checkpoint(run.cfg.checkpoint_path / "best.pt")
        lr = float(self.optimizer.param_groups[0]["lr"])
        run.log.epoch({"epoch": epoch, "step": self.global_step, "lr": lr, **values})
        self._callback("on_epoch_end")
        patience = run.cfg.early_stopping_patience
        if patience is not None and self.bad_epochs >= patience:
            self.stop_training = True
            run.log.message(
                f"Early stopping: {run.cfg.monitor} did not improve for {patience} epochs "
                f"(best {self.best_metric:.6f} at epoch {self.best_epoch})"
            )

    def _standalone_epoch(
        self, loader: Iterable, epoch: int, scheduler: Any, max_grad_norm: Any, log_interval: Any
    ) -> float:
        check_loader(loader, "train_loader")
        check_scheduler(scheduler, self.optimizer, "step")
        cfg = RunConfig(max(epoch, 1), max_grad_norm)
        interval = self.config.log_interval if log_interval is None else log_interval
        self._open_run(cfg, scheduler, None, interval)
        try:
            loss = self.train_epoch(loader, epoch)
            self.metrics.train_losses.append(loss)
            return loss
        finally:
            self._close_run()

    def _open_run(self, cfg: RunConfig, scheduler: Any, clipper: Any, log_interval: int) -> None:
        if clipper is None:
            clipper = NoClip() if cfg.max_grad_norm is None else NormClip(cfg.max_grad_norm)
        main = ddp.rank() == 0
        log = RunLog(ProgressBar(self.progress_bar), self.verbose, main)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self._run = _Run(cfg, scheduler, clipper, params, log_interval, log)
        directory = self.run_dir or cfg.checkpoint_path
        resume_at = None
        if self._resume is not None:
            resume_at = (self.global_step + self.skipped_steps, self.epoch)
        log.open(directory, self.tensorboard, resume_at)
        self._apply_pending_states()

    def _close_run(self) -> None:
        if self._run is not None:
            self._run.log.close()
        self._run = None

    def _begin_epoch(self, loader: Iterable, epoch: int) -> int:
        resume = self._resume if self._resume and self._resume["epoch"] == epoch else None
        start = resume["start"] if resume else 0
        if start == 0:
            self.metrics.reset_epoch()
        seed_epoch_sampler(loader, self.seed, epoch)
        if resume and start == 0:
            resume["rng"].restore()
            self._resume = None
        self.state.batch_in_epoch = start
        self._net.train()
        run = self._require_run()
        run.log.start_epoch(epoch, run.cfg.epochs, _length(loader), start)
        return start

    def _resume_rng(self) -> None:
        if self._resume is not None:
            self._resume.pop("rng").restore()
            self._resume = None

    def _apply_pending_states(self) -> None:
        pending, run = self._resume, self._run
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

    def _adopt_config(self, saved: dict[str, Any], path: Any) -> None:
        trainer = saved["trainer"]
        # The seed decides the shuffling, so exact resume needs the checkpoint's.
        self.config = dataclasses.replace(self.config, seed=int(trainer["seed"]))
        differ = [
            k
            for k in ("precision", "grad_accum_steps")
            if trainer.get(k) != getattr(self.config, k)
        ]
        if saved.get("world_size", 1) != ddp.world_size():
            differ.append("world size")
        if differ:
            warnings.warn(
                f"{path} was trained with different {', '.join(differ)}; resuming will not "
                "reproduce the uninterrupted run exactly",
                stacklevel=3,
            )

    def _batches(self, loader: Iterable) -> Iterable[Any]:
        if self.device.type == "cpu":
            return loader  # the model is on the CPU; so is what a loader yields
        return (_to_device(batch, self.device) for batch in loader)

    def _no_sync(self, skip_sync: bool) -> Any:
        if skip_sync and hasattr(self._net, "no_sync"):
            return self._net.no_sync()
        return _NO_CONTEXT

    def _autocast(self) -> Any:
        dtype = self.config.autocast_dtype
        if dtype is None:
            return _NO_CONTEXT
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _require_run(self) -> _Run:
        if self._run is None:
            raise RuntimeError("no training run is active: call train() or train_epoch()")
        return self._run

    def _callback(self, name: str) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(self)


def _clip(clipper: Any, params: list[nn.Parameter]) -> tuple[torch.Tensor, ClipResult | None]:
    """Run ``clipper``: ``(pre-clip norm, its ClipResult or None for a bare norm tensor)``."""
    result = clipper(params)
    if isinstance(result, torch.Tensor):
        return result, None
    if not isinstance(result, ClipResult):
        raise TypeError(
            f"clipper {type(clipper).__name__} must return a ClipResult or the norm tensor, "
            f"got {type(result).__name__}"
        )
    return result.total_norm, result


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
