"""The epoch loop of AdvancedTrainer: micro-batches, accumulation, log points, epoch ends.

Kept apart from the step maths in ``_trainer.py`` so each reads on its own. Resuming in
the middle of an epoch re-seeds the sampler for that epoch, skips the batches already
trained on without computing anything, and only then restores the RNG states, because
creating a DataLoader iterator draws from the global RNG.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from optiscope._internal.batches import _to
from optiscope.training import _distributed as ddp
from optiscope.training._checkpoint import set_rng_state
from optiscope.training._config import RunConfig
from optiscope.training._loggers import MetricsWriter, TensorBoardWriter
from optiscope.training._sampling import seed_epoch_sampler

__all__ = ["Run", "LoopMixin"]

# nullcontext is reusable; one instance saves an allocation per micro-batch.
_NO_CONTEXT = contextlib.nullcontext()


class Run:
    """The settings and objects of one ``train()`` (or standalone ``train_epoch``) call."""

    def __init__(
        self,
        cfg: RunConfig,
        scheduler: Any,
        clipper: Any,
        params: list[nn.Parameter],
        log_interval: int,
    ) -> None:
        self.cfg = cfg
        self.scheduler = scheduler
        self.clipper = clipper
        self.interval = cfg.scheduler_interval
        self.params = params
        self.log_interval = log_interval
        self.fused_skip = False


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


class LoopMixin:
    """Epoch loop, log points and epoch-end bookkeeping (mixed into AdvancedTrainer)."""

    def _start_run(
        self, cfg: RunConfig, scheduler: Any, clipper: Any, log_interval: int | None = None
    ) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        interval = self.config.log_interval if log_interval is None else log_interval
        self._run = Run(cfg, scheduler, clipper, params, interval)
        # Fused optimizers take a device-side found_inf (as under GradScaler), so skipping
        # needs no host read; only usable when no scheduler must know about each skip.
        self._run.fused_skip = (
            self.config.nonfinite == "skip"
            and self.scaler is None
            and bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))
            and (scheduler is None or cfg.scheduler_interval == "epoch")
        )
        self._apply_pending_states()

    def _run_epoch(self, loader: Iterable, epoch: int) -> None:
        run = self._require_run()
        total = _length(loader)
        resume = self._resume if self._resume and self._resume["epoch"] == epoch else None
        self._resume = None
        start = resume["start"] if resume else 0
        if start == 0:
            self._buffer.reset_epoch()
        seed_epoch_sampler(loader, self.seed, epoch)
        if resume and start == 0:
            set_rng_state(resume["rng"])
        self._net.train()
        batches = self._batches(loader)
        if start:
            # Consume the already-trained batches (loading only), then restore the RNG.
            next(itertools.islice(batches, start - 1, None), None)
            set_rng_state(resume["rng"])
        self.batch_in_epoch = start
        if self._is_main:
            self._bar.start_epoch(epoch, run.cfg.epochs, total, initial=start)
        self.optimizer.zero_grad(set_to_none=True)
        accum, group_start, group_size = self.config.grad_accum_steps, start, 0
        if accum == 1:
            # Every micro-batch is an optimizer step: the common case, kept lean.
            for inputs, targets in batches:
                self.micro_batch = 0
                self.training_step(inputs, targets)
                self.batch_in_epoch += 1
                self._finish_step(epoch, 1)
            self._bar.close()
            return
        for inputs, targets in batches:
            if self.batch_in_epoch == group_start:
                left = accum if total is None else total - group_start
                group_size = min(accum, left)
            self.micro_batch = self.batch_in_epoch - group_start
            last_micro = self.batch_in_epoch + 1 - group_start == group_size
            with self._no_sync(not last_micro):
                self.training_step(inputs, targets, 1.0 / group_size)
            self.batch_in_epoch += 1
            if last_micro:
                self._finish_step(epoch, self.batch_in_epoch - group_start)
                group_start = self.batch_in_epoch
        if self.batch_in_epoch > group_start:
            # A loader without len() ended inside an accumulation group: step on what we have.
            self._finish_step(epoch, self.batch_in_epoch - group_start)
        self._bar.close()

    def _no_sync(self, skip_sync: bool):
        if skip_sync and hasattr(self._net, "no_sync"):
            return self._net.no_sync()  # DDP: all-reduce once per optimizer step
        return _NO_CONTEXT

    def _finish_step(self, epoch: int, micro_batches: int) -> None:
        run = self._require_run()
        stepped = self.optimizer_step(epoch)
        self._bar.advance(micro_batches)
        if self._buffer.pending >= run.log_interval:
            self._log_point()
        every = run.cfg.checkpoint_every_steps
        if stepped and every is not None and self.global_step % every == 0:
            self.save_checkpoint(run.cfg.checkpoint_path / "last.pt")
        self._callback("on_step_end")

    def _log_point(self) -> None:
        run = self._run
        max_norm = getattr(run.clipper, "max_norm", None) if run is not None else None
        # Under DDP every rank reaches each log point together (same number of steps).
        records = self._buffer.flush(
            ddp.all_reduce_mean if ddp.is_distributed() else None,
            max_norm if isinstance(max_norm, float) else None,
        )
        if not records:
            return
        if run is not None and run.fused_skip:
            self._count_deferred_skips(records)
        for r in records:
            self.history.append(r)
            self.step_losses.append(r.loss)
            self.learning_rates.append(r.lr)
            self.grad_norms.append(r.grad_norm)
        self._callback("on_log")
        if not self._is_main:
            return
        last = records[-1]
        self._bar.show(last.loss, last.lr, last.grad_norm)
        rows = [{"kind": "step", **r.as_dict()} for r in self.history[-len(records) :]]
        for w in self._writers:
            w.write(rows)
        if self.verbose and not self._bar.visible:
            print(
                f"Epoch {last.epoch} step {last.step + 1} "
                f"Loss: {last.loss:.6f} LR: {last.lr:.6f} Grad norm: {last.grad_norm:.4f}"
            )

    def _epoch_train_loss(self) -> float:
        self._log_point()
        s, n = ddp.all_reduce_sum(
            [self._buffer.epoch_loss_sum, float(self._buffer.epoch_samples)], self.device
        )
        return s / n if n else math.nan

    def _end_epoch(self, epoch: int, val_loader: Iterable | None) -> None:
        run = self._require_run()
        train_loss = self._epoch_train_loss()
        self.train_losses.append(train_loss)
        val_loss, val_acc = self.validate(val_loader) if val_loader is not None else (None, None)
        self._buffer.reset_epoch()
        self.epoch, self.batch_in_epoch = epoch, 0
        values = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}
        monitored, mode = values[run.cfg.monitor], run.cfg.monitor_mode
        if val_loader is None:
            monitored, mode = train_loss, "min"  # without validation: lowest train loss
        self.step_scheduler("epoch", val_loss if val_loss is not None else train_loss)
        improved = self._update_best(monitored, epoch, mode)
        if run.cfg.checkpoint_path is not None:
            self.save_checkpoint(run.cfg.checkpoint_path / "last.pt")
            if improved:
                self.save_checkpoint(run.cfg.checkpoint_path / "best.pt")
        self._report_epoch(epoch, values)
        self._callback("on_epoch_end")
        patience = run.cfg.early_stopping_patience
        if patience is not None and self.bad_epochs >= patience:
            self.stop_training = True
            if self.verbose and self._is_main:
                print(
                    f"Early stopping: {run.cfg.monitor} did not improve for {patience} epochs "
                    f"(best {self.best_metric:.6f} at epoch {self.best_epoch})"
                )

    def _update_best(self, value: float | None, epoch: int, mode: str) -> bool:
        run = self._require_run()
        if value is None or math.isnan(value):
            self.bad_epochs += 1
            return False
        sign = 1.0 if mode == "min" else -1.0
        if self.best_metric is None or sign * (self.best_metric - value) > run.cfg.min_delta:
            self.best_metric, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def _report_epoch(self, epoch: int, values: dict[str, Any]) -> None:
        if not self._is_main:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"kind": "epoch", "epoch": epoch, "step": self.global_step, "lr": float(lr), **values}
        for w in self._writers:
            w.write([row])
        if self.verbose:
            print(f"\nEpoch {epoch} Summary:\n  Train Loss: {values['train_loss']:.6f}")
            if values["val_loss"] is not None:
                print(f"  Val Loss: {values['val_loss']:.6f}")
            if values["val_accuracy"] is not None:
                print(f"  Val Accuracy: {values['val_accuracy']:.4f}")
            print(f"  Learning Rate: {float(lr):.6f}\n" + "-" * 70)

    def _open_writers(self) -> None:
        run = self._require_run()
        directory = self.run_dir or run.cfg.checkpoint_path
        if directory is None or not self._is_main:
            return
        resume_at = None
        if self._resume is not None:
            resume_at = (self.global_step + self.skipped_steps, self.epoch)
        self._writers = [MetricsWriter(directory, resume_at)]
        if self.tensorboard:
            self._writers.append(TensorBoardWriter(directory / "tensorboard"))

    def _close_run(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []
        self._bar.close()
        self._run = None

    @property
    def _is_main(self) -> bool:
        return ddp.rank() == 0

    def _require_run(self) -> Run:
        if self._run is None:
            raise RuntimeError("no training run is active: call train() or train_epoch()")
        return self._run

    def _autocast(self):
        dtype = self.config.autocast_dtype
        if dtype is None:
            return _NO_CONTEXT
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _batches(self, loader: Iterable):
        on_cpu = self.device.type == "cpu"
        for item in loader:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise TypeError(
                    f"each batch must be an (inputs, targets) pair, got {type(item).__name__}"
                )
            if on_cpu:
                yield item[0], item[1]  # the model is on the CPU; so is what a loader yields
            else:
                yield _to(item[0], self.device), _to(item[1], self.device)

    def _callback(self, name: str) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(self)
