"""The :class:`Instruments` object: training-dynamics quantities at the natural points of a loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from optiscope._internal.checks import check_choice, check_int, check_open_unit, check_positive
from optiscope.batch_loss import BatchLoss, to_device
from optiscope.instruments._alpha import PreStepWeights
from optiscope.instruments._hist import HIST_KEYS, Histogram, hist_spec
from optiscope.instruments._noise import NoiseEMA
from optiscope.instruments._options import (
    DEFAULT_QUANTITIES,
    NOISE_SOURCES,
    QUANTITIES,
    check_optimizer_fits,
    check_probe,
    check_quantities,
    choose_batch_loss,
    pick_noise_source,
    trainable_parameters,
    unwrap_ddp,
    world,
)
from optiscope.instruments._probes import Probes
from optiscope.instruments._record import Recorder
from optiscope.instruments._step import StepMeasure

__all__ = ["DEFAULT_QUANTITIES", "NOISE_SOURCES", "QUANTITIES", "Instruments"]

_HESSIAN = ("sharpness", "preconditioned_sharpness", "hessian_trace")  # at sharpness_every


class Instruments:
    """Training-dynamics instruments for any model, optimizer and loop.

    Call :meth:`after_backward` after each (micro-batch) backward, optionally
    :meth:`before_step` after unscaling/clipping and before ``optimizer.step()``, and
    :meth:`after_step` after it. Every value stays a device tensor until :meth:`flush`
    (or :meth:`values`) copies all pending ones to the host in one transfer; reading
    :attr:`history` or :meth:`values` turns them into named values.

    Quantities (``quantities``; the first four are the default, measured every ``every``
    optimizer steps):

    - ``"loss"``: size-weighted mean of the losses passed to :meth:`after_backward`.
    - ``"grad_norm"``: global L2 norm of the gradients the optimizer steps with.
    - ``"layers"``: per parameter tensor ``layers/<name>/grad_norm``, ``weight_norm`` (the
      weights after the step), ``update_norm`` (``|w_after - w_before|``, Cockpit's
      UpdateSize), ``update_ratio`` (update over weight norm; NaN where the weight norm
      is 0) and ``distance`` (``|w - w_init|``, Cockpit's Distance); plus the global
      ``update_norm`` and ``update_ratio``. Costs a copy of the weights on measured
      steps, three foreach passes and one foreach norm (memory: three copies of the
      parameters).
    - ``"distance"``: global ``|w - w_init|``.
    - ``"noise_scale"``: McCandlish et al.'s simple noise scale ``B_simple`` (smoothed),
      ``critical_batch_size`` (~ ``B_simple``), ``batch_size`` and the smoothed
      ``noise_scale/grad_sq`` (``|G|^2``) and ``noise_scale/trace`` (``tr Sigma``). The
      second batch size comes from ``noise_source``: ``"micro_batches"`` (gradient
      accumulation: a subtraction, norm and copy of the gradients per micro-batch),
      ``"ddp"`` (this rank's gradient against the all-reduced one, via a DDP comm hook;
      pass the ``DistributedDataParallel`` model, or ``ddp_model``), ``"split"`` (the probe batch in
      ``split`` pieces: one extra forward and backward of the probe per interval), or
      ``"auto"`` (ddp for a DDP model, micro_batches when ``accumulation_steps > 1``,
      split when a probe batch is given).
    - ``"sharpness"`` (every ``sharpness_every`` steps): top Hessian eigenvalue of the
      probe batch's loss by warm-started Lanczos, with ``sharpness_threshold`` (2/lr for
      SGD, ``(2 + 2 beta)/lr`` with heavy-ball momentum); :attr:`hvp_counts` holds the
      Hessian-vector products of each measurement.
    - ``"preconditioned_sharpness"``: top eigenvalue of ``P^-1 H`` with Adam's
      preconditioner, with ``preconditioned_threshold`` ``(2 + 2 beta1)/((1 - beta1) lr)``.
    - ``"hessian_trace"`` (every ``sharpness_every`` steps): ``tr(H)`` of the probe
      batch's loss and ``hessian_trace/stderr``, by Hutch++ with the sharpness run's
      Lanczos basis as the sketch (exact on the top of the spectrum) plus
      ``trace_samples`` Rademacher probes for the rest (plain Hutchinson without
      ``"sharpness"``): ``trace_samples`` more Hessian-vector products on the same graph.
    - ``"grad_tests"`` (every ``grad_tests_every`` steps): Cockpit's norm,
      inner-product and orthogonality tests, mean GSNR, the early-stopping criterion
      (Mahsereci et al. 2017; above 0: stop) and the CABS batch size (Balles et al. 2017;
      both derived for plain SGD) from per-sample gradients of the probe batch
      (``grad_tests/...``): about one forward and backward of the probe batch plus memory
      for one gradient per sample. At steps that measure ``"hessian_trace"`` too, also
      ``tic``: the Takeuchi information criterion in its trace form, ``mean_i |g_i|^2 /
      tr(H)`` (Thomas et al. 2019; Cockpit's TICTrace).
    - ``"grad_hist"`` and ``"grad_hist_2d"`` (every ``grad_tests_every`` steps, from the
      same per-sample gradients as ``"grad_tests"``): Cockpit's GradHist1d and GradHist2d,
      histograms of every per-sample gradient element of the probe batch (``hist_bins``
      bins), and of (gradient element, its parameter's value) pairs (``hist_bins_2d``),
      in :attr:`histograms`. Costs the per-sample gradients plus about 2 ns per element
      (``B x`` the number of parameters) on one CPU thread.
    - ``"alpha"`` (every ``grad_tests_every`` steps): Cockpit's effective relative step
      size: where the step landed on a quadratic fitted (noise-aware) to the probe batch's
      loss and slope at both ends of it: -1 no progress, 0 the minimum along the step, 1
      the other side at the same loss, above 1 overshooting. For any optimizer (Cockpit's
      cheap path is plain SGD's); costs a copy of the weights before the step and two
      forward-mode passes of the probe batch (one when ``"grad_tests"`` or a histogram is
      measured too: the end of the step takes their per-sample gradients).

    Probe evaluations (sharpness, grad tests, split noise) run at the weights after the
    step, in eval mode (dropout off, BatchNorm on its running statistics, so the result
    is deterministic), and restore parameters, gradients, buffers, modes and RNG states
    bit-for-bit. They copy a few values to the host (their convergence tests), at their
    own intervals; the per-step quantities never do. Under DDP only rank 0 runs probes.

    Args:
        model: The network (a ``DistributedDataParallel`` wrapper is unwrapped).
        optimizer: Its optimizer (learning rates for thresholds, Adam's state).
        quantities: Names from :data:`QUANTITIES`.
        every: Optimizer steps between measurements of the cheap quantities and the noise
            scale (>= 1).
        sharpness_every: Steps between sharpness measurements (>= 1).
        grad_tests_every: Steps between gradient tests (>= 1).
        probe_batch: The fixed batch probes evaluate (needed for sharpness, grad tests
            and split noise).
        loss_fn: ``loss_fn(output, target)`` for probes (None: the model's own loss).
        batch_loss: Instead of ``loss_fn``: a :class:`~optiscope.batch_loss.BatchLoss` or
            any ``fn(model, batch) -> scalar``.
        noise_source: ``"auto"``, ``"micro_batches"``, ``"ddp"`` or ``"split"``.
        split: Pieces of the probe batch for ``noise_source="split"`` (>= 2).
        smoothing: EMA factor for the noise scale's numerator and denominator, in (0, 1).
        sharpness_iters: Lanczos steps per measurement at most (>= 1).
        sharpness_tol: Lanczos stops when the top Ritz value changes by at most this
            (relative) between steps, its residual is that small, or its estimated error
            (residual^2 / gap to the second Ritz value) a third of it (> 0).
        trace_samples: Rademacher probes per Hessian-trace measurement (>= 2).
        hist_bins: Bins of ``"grad_hist"`` (>= 1).
        hist_bins_2d: ``(gradient, parameter)`` bins of ``"grad_hist_2d"`` (each >= 1).
        hist_range: The histograms' gradient range ``[-hist_range, hist_range]``, values
            beyond it counted in the edge bins (Cockpit's ``range``); None: ``max |g_ij|``
            at each measurement, so nothing is clipped (> 0). The parameter axis always
            spans ``max |w|``.
        hist_per_layer: Also each parameter tensor's histograms on the same bins, as
            ``"grad_hist/<name>"`` and ``"grad_hist_2d/<name>"`` (Cockpit's
            ``keep_individual``; about 10% more binning time).
        accumulation_steps: Micro-batches per optimizer step, if known (for ``"auto"``).
        seed: Seeds the first Lanczos start vector (the global RNG is never used).
        ddp_model: The ``DistributedDataParallel`` wrapper that trains ``model`` when it
            wraps more than ``model`` itself (Lightning wraps the LightningModule in a
            module of its own, accelerate may too): its comm hook gives the ``"ddp"``
            noise source. Not needed when ``model`` is the wrapper.

    Raises:
        ValueError: An unknown quantity or noise source, an interval < 1, noise scale
            with no second batch size, a model without trainable parameters, probe
            quantities without a probe batch, preconditioned sharpness for an optimizer
            without Adam's ``betas``, or both ``loss_fn`` and ``batch_loss``.
        TypeError: An argument of the wrong kind.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> inst = Instruments(model, opt)
        >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        >>> for _ in range(3):
        ...     loss = torch.nn.functional.cross_entropy(model(x), y)
        ...     loss.backward(); inst.after_backward(loss, batch_size=8)
        ...     opt.step(); inst.after_step(); opt.zero_grad()
        >>> v = inst.values()
        >>> inst.step, sorted(k for k in v if "/" not in k)
        (3, ['distance', 'grad_norm', 'loss', 'lr', 'update_norm', 'update_ratio'])
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        quantities: Sequence[str] = DEFAULT_QUANTITIES,
        *,
        every: int = 1,
        sharpness_every: int = 16,
        grad_tests_every: int = 16,
        probe_batch: Any = None,
        loss_fn: Any = None,
        batch_loss: BatchLoss | Callable[[nn.Module, Any], torch.Tensor] | None = None,
        noise_source: str = "auto",
        split: int = 2,
        smoothing: float = 0.95,
        sharpness_iters: int = 20,
        sharpness_tol: float = 1e-3,
        trace_samples: int = 8,
        hist_bins: int = 100,
        hist_bins_2d: tuple[int, int] = (40, 50),
        hist_range: float | None = None,
        hist_per_layer: bool = False,
        accumulation_steps: int | None = None,
        seed: int = 0,
        ddp_model: nn.Module | None = None,
        _probe_later: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
        self.quantities = check_quantities(quantities)
        self.every = check_int("every", every, low=1)
        self.sharpness_every = check_int("sharpness_every", sharpness_every, low=1)
        self.grad_tests_every = check_int("grad_tests_every", grad_tests_every, low=1)
        self.split = check_int("split", split, low=2)
        self.smoothing = check_open_unit("smoothing", smoothing)
        self.sharpness_iters = check_int("sharpness_iters", sharpness_iters, low=1)
        self.sharpness_tol = check_positive("sharpness_tol", sharpness_tol, allow_inf=False)
        self.trace_samples = check_int("trace_samples", trace_samples, low=2)
        self.hist = hist_spec(hist_bins, hist_bins_2d, hist_range, hist_per_layer)
        if accumulation_steps is not None:
            accumulation_steps = check_int("accumulation_steps", accumulation_steps, low=1)
        seed = check_int("seed", seed, low=0)
        check_choice("noise_source", noise_source, NOISE_SOURCES)
        self.batch_loss: BatchLoss = choose_batch_loss(loss_fn, batch_loss)

        # The DDP wrapper is not kept: only the comm hook needs it, and a reference here
        # would keep it (and its process group) alive after the framework drops it.
        model, ddp = unwrap_ddp(model, ddp_model)
        self.model = model
        self.optimizer = optimizer
        named = trainable_parameters(model)
        self.names = [n for n, _ in named]
        self.device = named[0][1].device
        self.rank, self.world_size = world()
        wants = set(self.quantities)
        check_optimizer_fits(wants, optimizer)
        self.noise_source = pick_noise_source(
            noise_source, wants, ddp is not None, probe_batch, accumulation_steps, _probe_later
        )
        check_probe(wants, probe_batch is not None or _probe_later)
        self.probe_batch: Any = None
        if probe_batch is not None:
            self.set_probe_batch(probe_batch)

        params = [p for _, p in named]
        self._ema = NoiseEMA(self.smoothing)
        self._measure = StepMeasure(
            self.names, params, self.quantities, self.noise_source, ddp,
            self.world_size, self._ema,
        )  # fmt: skip
        split_pieces = self.split if self.noise_source == "split" else None
        self._probe = Probes(
            model, optimizer, self.batch_loss, self.names, self.quantities, split_pieces,
            self._ema, self.sharpness_iters, self.sharpness_tol, self.trace_samples, seed,
            self.hist,
        )  # fmt: skip
        # Probes run on rank 0 alone, so only rank 0 keeps the pre-step copy alpha needs.
        self._alpha = PreStepWeights(params) if "alpha" in wants and self.rank == 0 else None
        self._rec = Recorder()
        self.step = 0
        self._used_before_step = False
        self._snapshot(1)

    # ------------------------------------------------------------------ set-up
    def set_probe_batch(self, batch: Any) -> None:
        """Fix the batch that probes evaluate (a detached copy on the model's device).

        Raises:
            ValueError: Split noise needs at least ``split`` samples; grad tests and alpha
                two.
        """
        size = self.batch_loss.size(batch)
        if self.noise_source == "split" and size < self.split:
            raise ValueError(
                f"probe_batch has {size} samples, fewer than split={self.split} pieces"
            )
        for q in ("grad_tests", "alpha"):  # sample variances
            if q in self.quantities and size < 2:
                raise ValueError(f"{q} needs a probe_batch of >= 2 samples, got {size}")
        self.probe_batch = _detached(to_device(batch, self.device))

    # ------------------------------------------------------------------ the hooks
    def _due(self, step: int) -> bool:
        return step % self.every == 0

    def _snapshot(self, step: int) -> None:
        """The weights now are ``step``'s pre-step weights: copy them where ``step``
        measures an update (per-layer update norms, alpha)."""
        m = self._measure
        if m.want_layers and self._due(step):
            m.layers.snapshot()
            m.snapshot_for = step
        if self._alpha is not None and step % self.grad_tests_every == 0:
            self._alpha.take(step)

    def after_backward(
        self,
        loss: torch.Tensor | None = None,
        *,
        batch_size: int | None = None,
        grad_scale: torch.Tensor | float | None = None,
    ) -> None:
        """Call after each (micro-batch) ``backward()``; no host sync.

        Args:
            loss: This micro-batch's loss as computed (not divided by the accumulation
                count), for ``"loss"``.
            batch_size: Its number of samples (weights the loss; needed for the noise
                scale from micro-batches or DDP).
            grad_scale: The GradScaler scale the loss was multiplied by, if any (a tensor
                such as ``scaler._get_scale_async()`` keeps it on the device).

        Raises:
            ValueError: ``batch_size`` is missing where the noise scale needs it.
        """
        if (self.step + 1) % self.every == 0:
            self._measure.after_backward(loss, batch_size, grad_scale)

    def before_step(self) -> None:
        """Call after unscaling and clipping, before ``optimizer.step()`` (optional: without
        it, gradients are read in :meth:`after_step`, which must then come before
        ``zero_grad``, and the snapshot for update norms is taken after the previous step)."""
        self._used_before_step = True
        if self._due(self.step + 1):
            self._measure.before()
        self._snapshot(self.step + 1)

    def after_step(self) -> None:
        """Call after ``optimizer.step()``; no host sync (probe measurements at their own
        intervals copy a few values for their convergence tests)."""
        m = self._measure
        step = self.step + 1
        due = self._due(step)
        if due:
            m.before()
        self.step = step
        if due:
            m.record(step, self.optimizer.param_groups[0]["lr"], self._rec)
        self._run_probes(step)
        m.reset()
        if not self._used_before_step:
            # No before_step() in this loop: the weights now are the next step's pre-step ones.
            self._snapshot(step + 1)

    def skip_step(self) -> None:
        """Forget the step in progress (the optimizer skipped it, e.g. a non-finite loss)."""
        self._measure.reset()

    def _run_probes(self, step: int) -> None:
        wants = self.quantities
        jobs = []
        if step % self.sharpness_every == 0:
            jobs += [q for q in _HESSIAN if q in wants]
        before = None
        if step % self.grad_tests_every == 0:
            jobs += [q for q in ("grad_tests", *HIST_KEYS) if q in wants]
            before = self._alpha.of(step) if self._alpha is not None else None
            if before is not None:
                jobs.append("alpha")
        split_noise = self.noise_source == "split" and self._due(step)
        if not (jobs or split_noise) or self.rank != 0 or self.probe_batch is None:
            return
        used = float(self._measure.sizes * self.world_size)
        self._probe.measure(step, self.probe_batch, jobs, split_noise, used, self._rec, before)

    # ------------------------------------------------------------------ results
    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """Key -> ``[(optimizer step, value), ...]`` of everything flushed so far."""
        return self._rec.history

    @property
    def histograms(self) -> dict[str, list[tuple[int, Histogram]]]:
        """``"grad_hist"`` / ``"grad_hist_2d"`` (and with ``hist_per_layer`` the
        ``"<key>/<parameter name>"`` ones) -> ``[(optimizer step, Histogram), ...]`` of
        everything flushed so far."""
        return self._rec.histograms

    @property
    def hvp_counts(self) -> list[int]:
        """Hessian-vector products per sharpness measurement (preconditioned ones apart:
        :attr:`preconditioned_hvp_counts`)."""
        return list(self._probe.sharpness.hvp_counts)

    @property
    def preconditioned_hvp_counts(self) -> list[int]:
        """Hessian-vector products per preconditioned sharpness measurement."""
        return list(self._probe.preconditioned.hvp_counts)

    def flush(self) -> None:
        """Copy every pending value to the host (one transfer); :attr:`history` and
        :meth:`values` turn the copies into named values when read."""
        self._rec.flush()

    def values(self) -> dict[str, float]:
        """Flush, then the latest value of every quantity measured so far."""
        self.flush()
        return dict(self._rec.latest)

    def figures(self) -> dict[str, Any]:
        """Flush, then the figures of :mod:`optiscope.instruments.plots` for what was
        measured (a log point: the pending values are drawn too)."""
        from optiscope.instruments import plots

        self.flush()
        return plots.figures(self.history, self.histograms)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``torch.save`` (loads with ``weights_only=True``); flushes first."""
        self.flush()
        _ = self._rec.history  # runs the host side, so the moving averages are current
        return {
            "step": self.step,
            "names": list(self.names),
            "layers": self._measure.layers.state_dict(),
            "ema": self._ema.state_dict(),
            "sharpness": self._probe.sharpness.state_dict(),
            "preconditioned_sharpness": self._probe.preconditioned.state_dict(),
            "hessian_trace": self._probe.trace.state_dict(),
            "recorder": self._rec.state_dict(),
            "probe_batch": self.probe_batch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: The state is for other parameters.
        """
        if list(state["names"]) != self.names:
            raise ValueError(
                "the instruments state was saved for other parameters: "
                f"{list(state['names'])[:4]}... vs {self.names[:4]}..."
            )
        m = self._measure
        self.step = int(state["step"])
        m.layers.load_state_dict(state["layers"])
        self._ema.load_state_dict(state["ema"])
        self._probe.sharpness.load_state_dict(state["sharpness"], self.device)
        self._probe.preconditioned.load_state_dict(state["preconditioned_sharpness"], self.device)
        if "hessian_trace" in state:  # states saved before the trace instrument have none
            self._probe.trace.load_state_dict(state["hessian_trace"], self.device)
        self._rec.load_state_dict(state["recorder"])
        if state["probe_batch"] is not None:
            self.probe_batch = to_device(state["probe_batch"], self.device)
        m.reset()
        self._snapshot(self.step + 1)


def _detached(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.detach().clone()
    if isinstance(batch, dict):
        return {k: _detached(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_detached(v) for v in batch)
    return batch
