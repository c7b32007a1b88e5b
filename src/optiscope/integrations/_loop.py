"""What both callbacks share: the clipper, the instruments and the analysis, framework-free.

Each callback maps its framework's hooks onto :class:`LoopParts`: ``after_backward`` per
micro-batch, ``before_step`` where the gradients of an optimizer step are final (unscaled,
accumulated, all-reduced), ``after_step`` after ``optimizer.step()``, ``log_values`` at a
log point. Everything per step stays on the device; ``log_values`` is the one host copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiscope._internal.checks import check_positive_int
from optiscope.batch_loss import BatchLoss, as_batch_loss
from optiscope.integrations._analysis import (
    AnalysisOptions,
    analysis_options,
    first_batches,
    write_analysis,
)
from optiscope.integrations._clip import ClipStep, as_clipper

__all__ = ["LoopParts", "PartsView"]


def _instrument_options(instruments: Any) -> dict[str, Any] | None:
    if instruments is None or instruments is False:
        return None
    if instruments is True:
        return {}
    if isinstance(instruments, Mapping):
        bad = sorted({"model", "optimizer", "loss_fn", "batch_loss"} & set(instruments))
        if bad:
            raise ValueError(
                f"instruments: {bad} are set by the callback (the model and optimizer from the "
                "trainer, the loss from the callback's loss_fn); leave them out"
            )
        return dict(instruments)
    if isinstance(instruments, (list, tuple)) and all(isinstance(q, str) for q in instruments):
        return {"quantities": tuple(instruments)}
    raise TypeError(
        "instruments must be None, True (the default quantities), a list of quantity names or "
        f"a dict of Instruments keyword arguments, got {type(instruments).__name__}"
    )


class LoopParts:
    """The clipper, instruments and analysis settings of one callback.

    Args:
        clipper: An optiscope clipper, a registry name, ``{"name": ..., **params}``, or None.
        instruments: None, True, a list of quantities, or a dict of
            :class:`~optiscope.instruments.Instruments` keyword arguments (without
            ``model``/``optimizer``/``loss_fn``).
        analysis: See :func:`~optiscope.integrations._analysis.analysis_options`.
        run_dir: Where the analysis writes its figures and report (needed with analysis).
        loss_fn: How a batch becomes a loss for the instruments' probes and the analysis
            (None: the model returns ``.loss``; see :mod:`optiscope.batch_loss`).
        log_every: Log the clipper's record every this many optimizer steps (None: the
            framework's own logging interval).

    Raises:
        TypeError: An argument of the wrong kind.
        ValueError: A bad value, or ``analysis`` without ``run_dir``.
    """

    def __init__(
        self,
        clipper: Any,
        instruments: Any,
        analysis: Any,
        run_dir: str | Path | None,
        loss_fn: Any,
        log_every: int | None,
    ) -> None:
        self.clipper = as_clipper(clipper)
        self.clip = None if self.clipper is None else ClipStep(self.clipper)
        self.instrument_options = _instrument_options(instruments)
        if self.instrument_options is not None:
            from optiscope.instruments import InstrumentsCallback

            # Raises what Instruments would raise at the first batch (unknown quantity,
            # bad interval, ...), now: errors at construction.
            InstrumentsCallback(**self.instrument_options)
        self.analysis: AnalysisOptions | None = analysis_options(analysis)
        if self.analysis is not None and run_dir is None:
            raise ValueError("run_dir is needed when analysis is on: the report is written there")
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.batch_loss: BatchLoss = as_batch_loss(loss_fn)
        self.log_every = None if log_every is None else check_positive_int("log_every", log_every)
        self.instruments: Any = None
        self._pending_instruments: dict[str, Any] | None = None
        self._logged_step = 0  # the last instrument step handed to the loggers

    # -- instruments --------------------------------------------------------------------

    def build_instruments(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, probe_batch: Any,
        accumulation_steps: int, wrapped: Any = None,
    ) -> None:  # fmt: skip
        """Create the instruments on the trainer's model and optimizer (first step).

        The first training batch is the probe batch unless one was given; the
        accumulation count lets ``noise_source="auto"`` pick the micro-batches, and the
        framework's ``DistributedDataParallel`` wrapper (``wrapped``, when it is one) the
        ranks' gradients.
        """
        if self.instrument_options is None or self.instruments is not None:
            return
        from optiscope.instruments import Instruments

        opts = dict(self.instrument_options)
        opts.setdefault("accumulation_steps", accumulation_steps)
        if opts.get("probe_batch") is None:
            opts["probe_batch"] = probe_batch
        if isinstance(wrapped, nn.parallel.DistributedDataParallel):
            opts["ddp_model"] = wrapped
        self.instruments = Instruments(model, optimizer, batch_loss=self.batch_loss, **opts)
        if self._pending_instruments is not None:
            self.instruments.load_state_dict(self._pending_instruments)
            self._pending_instruments = None
        self._logged_step = self.instruments.step

    # -- the per-step hooks -------------------------------------------------------------

    def after_backward(self, loss: torch.Tensor | None, batch_size: int | None,
                       grad_scale: Any = None) -> None:  # fmt: skip
        """After each micro-batch's backward: its loss as computed, size, GradScaler scale."""
        if self.instruments is not None:
            self.instruments.after_backward(
                None if loss is None else loss.detach(), batch_size=batch_size,
                grad_scale=grad_scale,
            )  # fmt: skip

    def before_step(self, step: int, parameters: Any) -> None:
        if self.clip is not None:
            self.clip.clip(step, parameters)
        if self.instruments is not None:
            self.instruments.before_step()

    def after_step(self, skipped: bool = False) -> None:
        """After ``optimizer.step()``; ``skipped``: the step was not taken (fp16 overflow)."""
        if self.instruments is not None:
            if skipped:
                self.instruments.skip_step()
            else:
                self.instruments.after_step()

    def clip_values(self) -> dict[str, float]:
        """The clipper's record since the last call (host copy), keys under ``clip/``."""
        if self.clip is None:
            return {}
        return {f"clip/{k}": v for k, v in self.clip.flush().items()}

    def instrument_values(self) -> dict[int, dict[str, float]]:
        """What the instruments measured since the last call, by step (one host copy),
        keys under ``instruments/``; called at log points only."""
        inst = self.instruments
        if inst is None or inst.step <= self._logged_step:
            return {}
        inst.flush()
        by_step: dict[int, dict[str, float]] = {}
        for key, series in inst.history.items():
            for step, value in reversed(series):
                if step <= self._logged_step:
                    break
                by_step.setdefault(step, {})[f"instruments/{key}"] = value
        self._logged_step = inst.step
        return dict(sorted(by_step.items()))

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Clipper statistics and record, instrument state and history: plain data."""
        state: dict[str, Any] = {}
        if self.clip is not None:
            state["clip"] = self.clip.state_dict()
        if self.instruments is not None:
            state["instruments"] = self.instruments.state_dict()
        elif self._pending_instruments is not None:
            state["instruments"] = self._pending_instruments
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; instruments built later pick theirs up when built.

        Raises:
            ValueError: The checkpoint holds a clipper record but this callback has no
                clipper (or the reverse), or the clipper's configuration differs.
        """
        if ("clip" in state) != (self.clip is not None):
            raise ValueError(
                "the checkpoint's optiscope state was saved "
                + ("with" if "clip" in state else "without")
                + " a clipper, this callback has "
                + ("none" if self.clip is None else "one")
                + "; resume with the same clipper setting"
            )
        if self.clip is not None:
            self.clip.load_state_dict(state["clip"])
        if "instruments" in state:
            if self.instruments is not None:
                self.instruments.load_state_dict(state["instruments"])
                self._logged_step = self.instruments.step
            else:
                self._pending_instruments = state["instruments"]

    # -- report ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Summary rows about the clipper and the instruments."""
        rows: dict[str, Any] = {"Clipping": "none" if self.clipper is None else repr(self.clipper)}
        if self.clip is not None:
            self.clip.flush()
            rows["Clipped steps"] = f"{self.clip.clipped_steps:,} of {self.clip.steps:,}"
        if self.instruments is not None:
            rows["Instruments"] = ", ".join(self.instruments.quantities)
        return rows

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """The instruments' history (empty before they are built)."""
        return {} if self.instruments is None else self.instruments.history

    @property
    def histograms(self) -> dict[str, list[tuple[int, Any]]]:
        """The instruments' gradient histograms (empty before they are built)."""
        return {} if self.instruments is None else self.instruments.histograms

    def instrument_outputs(self, run_dir: Path) -> tuple[dict[str, Any], list[Any]]:
        """``instruments.json`` in ``run_dir``; the summary numbers and the report figures.

        The run package's own writers and captions (:mod:`optiscope.run.dynamics`), fed
        the intervals and Adam betas this run used.
        """
        inst = self.instruments
        if inst is None:
            return {}, []
        from optiscope.run import dynamics, parse_config

        table: dict[str, Any] = {
            "instruments": {
                "enabled": True,
                "every": inst.every,
                "sharpness_every": inst.sharpness_every,
                "grad_tests_every": inst.grad_tests_every,
                "trace_samples": inst.trace_samples,
            }
        }
        betas = inst.optimizer.param_groups[0].get("betas")
        if betas is not None:
            table["optimizer"] = {"betas": [float(b) for b in betas]}
        cfg = parse_config(table, origin="instruments")
        dynamics.write_history(Path(run_dir) / "instruments.json", self)
        numbers = dynamics.dynamics_numbers(inst.history, list(inst.hvp_counts))
        figures = dynamics.dynamics_figures(
            cfg, inst.history, Path(run_dir) / "figures", inst.histograms
        )
        return numbers, figures

    def write_report(self, model: nn.Module, loader: Any, rows: Mapping[str, Any]) -> Path:
        """The end-of-training analysis into :attr:`run_dir`: the path of ``report.html``.

        ``rows`` are the framework's summary rows (framework, steps, ...); the model's name
        and size, the clipper and the instruments' rows and figures are added here.
        """
        options = self.analysis
        if options is None:
            raise RuntimeError("write_report needs the analysis options (analysis=None)")
        device = next(model.parameters()).device
        batches = first_batches(loader, options.max_batches, device)
        run_dir = Path(self.run_dir)  # type: ignore[arg-type]
        size = sum(p.numel() for p in model.parameters())
        summary = {
            "Framework": rows["Framework"],
            "Model": f"{type(model).__name__} - {size:,} parameters",
            **{k: v for k, v in rows.items() if k != "Framework"},
            **self.describe(),
        }
        numbers, figures = self.instrument_outputs(run_dir)
        summary.update(numbers)
        return write_analysis(model, self.batch_loss, batches, options, run_dir, summary, figures)


class PartsView:
    """The read-only attributes both callbacks expose over their :class:`LoopParts`."""

    parts: LoopParts

    @property
    def clipper(self) -> Any:
        """The optiscope clipper (None when there is none)."""
        return self.parts.clipper

    @property
    def clip_history(self) -> dict[str, list[Any]]:
        """Per optimizer step: ``step``, ``grad_norm``, ``clipped_norm``, ``clipped``."""
        if self.parts.clip is None:
            return {}
        self.parts.clip.flush()
        return self.parts.clip.history

    @property
    def instruments(self) -> Any:
        """The :class:`~optiscope.instruments.Instruments` (built at the first batch)."""
        return self.parts.instruments
