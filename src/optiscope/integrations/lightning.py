"""optiscope in a PyTorch Lightning ``Trainer``: clipping, instruments, analysis, schedules.

:class:`OptiscopeCallback` brings an optiscope clipper (ZClip, AutoClip, AGC, ...) in place
of ``Trainer(gradient_clip_val=...)``, the instruments logged through the trainer's
loggers, and at the end of ``fit`` a landscape and curvature analysis with an HTML report.
Its state (clipper statistics, clip record, instrument state and history) is part of
Lightning's checkpoints and comes back with ``fit(ckpt_path=...)``.

Schedules need no adapter: :class:`~optiscope.schedules.ScheduleLR` is a torch
``LRScheduler``, so Lightning's scheduler check accepts it, ``LearningRateMonitor`` reads
the rates it sets, and its state dict resumes it exactly. :func:`schedule_config` returns
the ``lr_scheduler`` dict for ``configure_optimizers``.

Importing this module imports ``lightning``; ``import optiscope`` does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from optiscope._internal.checks import check_choice, check_positive_int
from optiscope.integrations._loop import LoopParts, PartsView
from optiscope.schedules import Schedule, ScheduleLR

__all__ = ["OptiscopeCallback", "schedule_config"]


def schedule_config(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule | list[Schedule],
    interval: str = "step",
    frequency: int = 1,
    name: str | None = None,
) -> dict[str, Any]:
    """The ``lr_scheduler`` entry of ``configure_optimizers`` for an optiscope schedule.

    With ``interval="step"`` update ``k`` uses ``schedule(k)``; with ``"epoch"`` every
    step of epoch ``e`` uses ``schedule(e)`` (Lightning steps the scheduler at each
    epoch's end).

    Args:
        optimizer: The optimizer ``configure_optimizers`` returns.
        schedule: One schedule, or one per param group.
        interval: ``"step"`` or ``"epoch"``.
        frequency: Step the scheduler every this many intervals (>= 1).
        name: The name ``LearningRateMonitor`` logs it under (default ``lr-<Optimizer>``).

    Returns:
        ``{"scheduler": ScheduleLR(...), "interval": ..., "frequency": ..., "name": ...}``.

    Raises:
        ValueError: An unknown interval or ``frequency < 1``.

    Example:
        >>> import torch
        >>> from optiscope.schedules import WarmupCosineSchedule
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> cfg = schedule_config(opt, WarmupCosineSchedule(0.1, 10, 100))
        >>> type(cfg["scheduler"]).__name__, cfg["interval"]
        ('ScheduleLR', 'step')
    """
    check_choice("interval", interval, ("step", "epoch"))
    check_positive_int("frequency", frequency)
    config: dict[str, Any] = {
        "scheduler": ScheduleLR(optimizer, schedule),
        "interval": interval,
        "frequency": frequency,
    }
    if name is not None:
        config["name"] = name
    return config


class OptiscopeCallback(PartsView, pl.Callback):
    """Clipper, instruments and end-of-fit analysis for a Lightning ``Trainer``.

    - **Clipping**: the clipper runs in ``on_before_optimizer_step``, once per optimizer
      step (after the last micro-batch under ``accumulate_grad_batches``), after the
      precision plugin has unscaled the gradients under AMP, and before
      ``optimizer.step()``. It replaces ``gradient_clip_val``; setting both is an error.
      Its record (norm before and after, clipped or not) is logged every ``log_every``
      optimizer steps under ``optiscope/clip/...``.
    - **Instruments**: built on the module and its optimizer at the first training
      batch (that batch is the probe batch unless one is given); at each log point
      every value measured since the last one is logged under
      ``optiscope/instruments/...`` with the step it was measured at.
    - **Analysis**: at the end of ``fit``, on global rank 0, landscape and curvature on
      the first ``max_batches`` training batches, and ``report.html`` in ``run_dir``;
      the module (weights, buffers, modes, RNG states) is left exactly as trained.

    Everything is logged with ``logger.log_metrics(..., step=trainer.global_step)`` on
    each of ``trainer.loggers`` (their ``log_metrics`` write on rank 0 only).

    Args:
        clipper: An optiscope clipper (``ZClip()``, ``AutoClip()``, ``AGC()``, ...), a
            registry name, ``{"name": ..., **params}``, or None.
        instruments: None, True (the default quantities), a list of quantity names, or a
            dict of :class:`~optiscope.instruments.Instruments` keyword arguments.
        analysis: False, True, or a dict (keys ``landscape``, ``curvature``,
            ``max_batches``, ``name``; see ``optiscope.integrations._analysis``).
        run_dir: Directory of the report (required with ``analysis``).
        loss_fn: How a batch becomes a loss for the probes and the analysis: None (the
            module's ``forward(**batch)`` returns ``.loss``, e.g. a wrapped Hugging Face
            model), a ``loss_fn(output, target)``, or a
            :class:`~optiscope.batch_loss.BatchLoss` such as
            ``FunctionLoss(lambda m, b: ...)``.
        log_every: Log the clip record every this many optimizer steps (default: the
            trainer's ``log_every_n_steps``).

    Raises:
        TypeError: An argument of the wrong kind.
        ValueError: A bad value; at ``fit``, a clipper together with
            ``Trainer(gradient_clip_val=...)``.

    Example:
        >>> from optiscope.clipping import ZClip
        >>> cb = OptiscopeCallback(clipper=ZClip(warmup_steps=5))
        >>> cb.state_key
        'OptiscopeCallback'
    """

    def __init__(
        self,
        *,
        clipper: Any = None,
        instruments: Any = None,
        analysis: Any = False,
        run_dir: str | Path | None = None,
        loss_fn: Any = None,
        log_every: int | None = None,
    ) -> None:
        super().__init__()
        self.parts = LoopParts(clipper, instruments, analysis, run_dir, loss_fn, log_every)
        self.report_path: Path | None = None
        self._loss: torch.Tensor | None = None
        self._seen_step = 0
        self._batch_size: int | None = None
        self._post_hook: Any = None
        self._stepped = False

    # -- setup --------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.parts.clipper is not None and trainer.gradient_clip_val:
            raise ValueError(
                f"OptiscopeCallback(clipper={self.parts.clipper!r}) replaces Lightning's "
                f"clipping, but Trainer(gradient_clip_val={trainer.gradient_clip_val!r}) is set "
                "too; leave gradient_clip_val unset"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seen_step = trainer.global_step
        inst = self.parts.instruments
        if inst is not None:  # a second fit with this callback
            if trainer.optimizers[:1] != [inst.optimizer]:
                raise ValueError(
                    "this OptiscopeCallback's instruments follow the optimizer of an earlier "
                    "fit; use a new OptiscopeCallback for a new model or optimizer"
                )
            self._post_hook = inst.optimizer.register_step_post_hook(self._after_optimizer_step)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.parts.instrument_options is None:
            return
        self._batch_size = self.parts.batch_loss.size(batch)
        if self.parts.instruments is not None:
            return
        if len(trainer.optimizers) != 1:
            raise ValueError(f"the instruments follow one optimizer, got {len(trainer.optimizers)}")
        optimizer = trainer.optimizers[0]
        self.parts.build_instruments(
            pl_module, optimizer, batch, trainer.accumulate_grad_batches, trainer.strategy.model
        )  # under DDP, the strategy's model is DistributedDataParallel around the module
        # Right after optimizer.step() and before Lightning steps the scheduler, so the
        # instruments see the rate the step used; GradScaler skips the call (and with
        # it this hook) when it skips the step.
        self._post_hook = optimizer.register_step_post_hook(self._after_optimizer_step)

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepped = True
        self.parts.after_step()

    # -- per step ------------------------------------------------------------------------

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        self._loss = loss

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss, self._loss = self._loss, None
        if self.parts.instruments is None or loss is None:
            return
        # Lightning hands on_before_backward the loss divided by accumulate_grad_batches
        # and, under fp16 AMP, multiplied by the GradScaler's scale; the instruments want
        # the micro-batch's loss as computed, and the scale of its gradients.
        scale = _scale_of(trainer)
        loss = loss.detach() * trainer.accumulate_grad_batches
        if scale is not None:
            loss = loss / scale
        self.parts.after_backward(loss, self._batch_size, scale)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        # The precision plugin has unscaled the gradients by now (AMP), and under
        # accumulation this runs once, after the last micro-batch.
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.parts.before_step(trainer.global_step, params)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        step = trainer.global_step
        if step == self._seen_step:  # an accumulation micro-batch: no optimizer step yet
            return
        self._seen_step = step
        if self.parts.instruments is not None and not self._stepped:
            self.parts.after_step(skipped=True)  # the GradScaler skipped optimizer.step()
        self._stepped = False
        every = self.parts.log_every or trainer.log_every_n_steps
        if step % every == 0:  # a log point: the one host copy of the interval
            self._log(trainer)

    def _log(self, trainer: pl.Trainer) -> None:
        # Each instrument value under the step it was measured at, the clip record now.
        rows = self.parts.instrument_values()
        clip = self.parts.clip_values()
        if clip:
            rows.setdefault(trainer.global_step, {}).update(clip)
        for step, values in rows.items():
            metrics = {f"optiscope/{k}": v for k, v in values.items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    # -- end of fit -----------------------------------------------------------------------

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._post_hook is not None:
            self._post_hook.remove()
            self._post_hook = None
        self._log(trainer)
        options = self.parts.analysis
        if options is None or not trainer.is_global_zero:
            return
        loader = trainer.train_dataloader
        if loader is None:
            raise ValueError("the analysis needs the training dataloader; fit has none")
        rows = {
            "Framework": f"Lightning {pl.__version__}",
            "Optimizer steps": trainer.global_step,
            "Epochs": trainer.current_epoch,
        }
        self.report_path = self.parts.write_report(pl_module, loader, rows)

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return self.parts.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.parts.load_state_dict(state_dict)


def _scale_of(trainer: pl.Trainer) -> torch.Tensor | None:
    # The GradScaler's scale as a device tensor (get_scale() would copy it to the host).
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return None
    return scaler._scale
