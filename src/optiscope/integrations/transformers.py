"""optiscope in a Hugging Face ``Trainer``: clipping, instruments, analysis.

:class:`OptiscopeCallback` is a ``TrainerCallback`` for models that take dict batches and
return ``.loss`` (every ``transformers`` model with labels). It brings an optiscope
clipper in place of ``TrainingArguments(max_grad_norm=...)``, the instruments logged with
``Trainer.log``, and at ``on_train_end`` on the main process a landscape and curvature
analysis with an HTML report. Its state is saved next to each checkpoint
(``optiscope_state.pt``) and read back by ``trainer.train(resume_from_checkpoint=...)``.

Schedules need no adapter: pass ``optimizers=(optimizer, ScheduleLR(optimizer, schedule))``;
the Trainer steps the scheduler once per optimizer step (not per micro-batch), and saves
and loads its state dict with each checkpoint, so a resume continues at the right rate.
:func:`optiscope.lr_find` takes the model and ``trainer.get_train_dataloader()`` as they are.

Importing this module imports ``transformers``; ``import optiscope`` does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import TrainerCallback

from optiscope._internal.atomic import atomic_write
from optiscope.integrations._analysis import first_batches
from optiscope.integrations._loop import LoopParts, PartsView

__all__ = ["OptiscopeCallback", "STATE_NAME"]

STATE_NAME = "optiscope_state.pt"


class OptiscopeCallback(PartsView, TrainerCallback):
    """Clipper, instruments and end-of-training analysis for a Hugging Face ``Trainer``.

    - **Clipping**: the clipper runs in ``on_pre_optimizer_step``, once per optimizer
      step (after the last micro-batch of ``gradient_accumulation_steps``), on unscaled
      gradients (under fp16 the Trainer has unscaled them by then to measure the
      ``grad_norm`` it logs; if not, the callback unscales them itself). It replaces
      ``max_grad_norm`` clipping, which the Trainer does before this hook with a default
      of 1.0, so ``TrainingArguments(max_grad_norm=0)`` is required with a clipper.
    - **Instruments**: built on the model and optimizer at the first training batch (its
      probe batch is the first batch of the train dataloader unless one is given).
    - **Logging**: every ``log_every`` optimizer steps (default the Trainer's
      ``logging_steps``) the clip record and the latest value of each instrument
      quantity measured since the last log point, with
      ``trainer.log`` (so every ``report_to`` integration and ``state.log_history`` get
      them) under ``optiscope/...``; that needs the trainer, hence :meth:`attach`.
    - **Analysis**: at ``on_train_end``, on the main process, landscape and curvature on
      the first ``max_batches`` training batches and ``report.html`` in ``run_dir``; the
      model is left exactly as trained (weights, buffers, modes, RNG states).

    Args:
        clipper: An optiscope clipper (``ZClip()``, ``AutoClip()``, ``AGC()``, ...), a
            registry name, ``{"name": ..., **params}``, or None.
        instruments: None, True (the default quantities), a list of quantity names, or a
            dict of :class:`~optiscope.instruments.Instruments` keyword arguments.
        analysis: False, True, or a dict (keys ``landscape``, ``curvature``,
            ``max_batches``, ``name``; see ``optiscope.integrations._analysis``).
        run_dir: Directory of the report (required with ``analysis``).
        loss_fn: How a batch becomes a loss for the probes and the analysis (None: the
            model returns ``.loss``; see :mod:`optiscope.batch_loss`).
        log_every: Log the clip record every this many optimizer steps.

    Raises:
        TypeError: An argument of the wrong kind.
        ValueError: A bad value; at ``on_train_begin``, a clipper with ``max_grad_norm >
            0``, a callback that was not attached, or a resume whose checkpoint has no
            optiscope state.

    Example:
        >>> from optiscope.clipping import AutoClip
        >>> cb = OptiscopeCallback(clipper=AutoClip(percentile=10))
        >>> cb.clipper
        AutoClip(percentile=10.0, history_size=1000, norm_type=2.0)
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
        self.parts = LoopParts(clipper, instruments, analysis, run_dir, loss_fn, log_every)
        self.trainer: Any = None
        self.report_path: Path | None = None
        self._loss: torch.Tensor | None = None
        self._hook: Any = None
        self._batch_size: int | None = None

    def attach(self, trainer: transformers.Trainer) -> OptiscopeCallback:
        """Add this callback to ``trainer`` (once) and log through its ``log``.

        Returns:
            The callback, so ``cb = OptiscopeCallback(...).attach(trainer)`` reads well.

        Raises:
            TypeError: ``trainer`` is not a ``transformers.Trainer``.
        """
        if not isinstance(trainer, transformers.Trainer):
            raise TypeError(f"trainer must be a transformers.Trainer, got {type(trainer).__name__}")
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self.trainer = trainer
        return self

    # -- begin -----------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None:
            raise ValueError(
                "OptiscopeCallback logs with Trainer.log; add it with "
                "OptiscopeCallback(...).attach(trainer) instead of Trainer(callbacks=[...])"
            )
        if self.parts.clipper is not None and args.max_grad_norm > 0:
            raise ValueError(
                f"OptiscopeCallback(clipper={self.parts.clipper!r}) replaces the Trainer's "
                f"clipping, but TrainingArguments(max_grad_norm={args.max_grad_norm!r}) clips "
                "before it (1.0 is the default); pass max_grad_norm=0"
            )
        model = kwargs["model"]
        if self.parts.instrument_options is not None:
            self._start_instruments(args, model, kwargs["optimizer"], kwargs["train_dataloader"])
        if state.global_step > 0:
            self._load(args, state)

    def _start_instruments(self, args: Any, model: Any, optimizer: Any, loader: Any) -> None:
        accum = args.gradient_accumulation_steps
        opts = self.parts.instrument_options or {}
        micro = "noise_scale" in opts.get("quantities", ()) and accum > 1 and opts.get(
            "noise_source", "auto") in ("auto", "micro_batches")  # fmt: skip
        scaler = getattr(optimizer, "scaler", None)
        if micro and scaler is not None and scaler.is_enabled():
            raise ValueError(
                "the noise scale from micro-batches needs the gradients of every micro-batch "
                "in one scale, but under fp16 the Trainer unscales only the last one before "
                "any callback sees it; use bf16, no accumulation, or noise_source='split'"
            )
        if self._hook is None:
            # The Trainer hands its callbacks no loss: read it off the model's output.
            self._hook = model.register_forward_hook(self._capture_loss, with_kwargs=True)
        probe = first_batches(loader, 1, next(model.parameters()).device)[0]
        # Under DDP the Trainer's model_wrapped is DistributedDataParallel around the model.
        wrapped = getattr(self.trainer, "model_wrapped", None)
        self.parts.build_instruments(model, optimizer, probe, accum, wrapped)

    def _capture_loss(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # a probe or an evaluation, not a training micro-batch
        loss = getattr(output, "loss", None)
        if loss is None and isinstance(output, dict):
            loss = output.get("loss")
        labels, items = kwargs.get("labels"), kwargs.get("num_items_in_batch")
        if loss is not None and labels is not None and items is not None:
            # The model divided the summed loss by the label count of the whole
            # accumulated batch; the instruments want this micro-batch's mean.
            shifts = getattr(self.trainer, "_loss_shifts_labels", False)
            counted = labels[..., 1:] if shifts else labels
            loss = loss.detach() * items / counted.ne(-100).sum().clamp(min=1)
        self._loss = loss
        self._batch_size = self.parts.batch_loss.size(kwargs) if kwargs else None

    # -- per step ------------------------------------------------------------------------

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A micro-batch's backward is done and no optimizer step follows yet.
        scale = _scale_of(kwargs["optimizer"])
        self.parts.after_backward(self._loss, self._batch_size, scale)
        self._loss = None

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs["optimizer"]
        _unscale(optimizer)
        self.parts.after_backward(self._loss, self._batch_size, None)  # unscaled by now
        self._loss = None
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.parts.before_step(state.global_step, params)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        skipped = bool(getattr(self.trainer.accelerator, "optimizer_step_was_skipped", False))
        self.parts.after_step(skipped=skipped)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        every = self.parts.log_every or max(int(state.logging_steps or 1), 1)
        if state.global_step % every == 0:  # a log point: the one host copy of the interval
            self._log(control)

    def _log(self, control: Any) -> None:
        # Trainer.log logs at the current step: the latest value of each quantity measured
        # since the last log point (the instruments' history keeps every step).
        values: dict[str, float] = {}
        for row in self.parts.instrument_values().values():
            values.update(row)
        values.update(self.parts.clip_values())
        if values:
            # Trainer.log's on_log clears control.should_log; the Trainer's own log of this
            # step (decided before this hook) must still happen.
            should_log = control.should_log
            self.trainer.log({f"optiscope/{k}": v for k, v in values.items()})
            control.should_log = should_log

    # -- checkpoints ----------------------------------------------------------------------

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            state = self.parts.state_dict()
            atomic_write(folder / STATE_NAME, lambda f: torch.save(state, f))

    def _load(self, args: Any, state: Any) -> None:
        resume = getattr(args, "resume_from_checkpoint", None)
        folder = Path(resume) if isinstance(resume, str) and resume else (
            Path(args.output_dir) / f"checkpoint-{state.global_step}"
        )  # fmt: skip
        path = folder / STATE_NAME
        if not path.is_file():
            raise ValueError(
                f"resuming at step {state.global_step}, but {path} does not exist; the "
                "checkpoint was written without OptiscopeCallback (or elsewhere: set "
                "TrainingArguments(resume_from_checkpoint=<folder>))"
            )
        self.parts.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    # -- end ------------------------------------------------------------------------------

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._log(control)  # what the last log point did not see
        options = self.parts.analysis
        if options is None or not state.is_world_process_zero:
            return
        rows = {
            "Framework": f"transformers {transformers.__version__}",
            "Optimizer steps": state.global_step,
            "Gradient accumulation": args.gradient_accumulation_steps,
        }
        self.report_path = self.parts.write_report(
            kwargs["model"], kwargs["train_dataloader"], rows
        )


def _scale_of(optimizer: Any) -> torch.Tensor | None:
    # The GradScaler's scale as a device tensor (get_scale() would copy it to the host).
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return None
    return scaler._scale


def _unscale(optimizer: Any) -> None:
    # accelerate's AcceleratedOptimizer holds the GradScaler under fp16; the Trainer's own
    # grad-norm measurement unscales before this hook, this covers a Trainer that did not.
    scaler = getattr(optimizer, "scaler", None)
    inner = getattr(optimizer, "optimizer", None)
    if scaler is None or inner is None or not scaler.is_enabled():
        return
    from torch.amp.grad_scaler import OptState

    stage = scaler._per_optimizer_states[id(inner)]["stage"]
    if stage is OptState.READY:
        scaler.unscale_(inner)
