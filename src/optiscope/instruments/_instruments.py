"""The :class:`Instruments` object: training-dynamics quantities at the natural points of a loop."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from optiscope._internal.checks import check_choice, check_int, check_open_unit, check_positive
from optiscope._internal.registry import nearest
from optiscope._internal.restore import preserved
from optiscope.batch_loss import BatchLoss, FunctionLoss, as_batch_loss, to_device
from optiscope.instruments._grad_tests import _slice, gradient_tests
from optiscope.instruments._layers import LayerNorms
from optiscope.instruments._noise import (
    DDPNoise,
    MicroBatchNoise,
    NoiseEMA,
    noise_estimates,
    split_gradient_norms,
)
from optiscope.instruments._record import Recorder
from optiscope.instruments._sharpness import (
    SharpnessTracker,
    adam_preconditioner,
    preconditioned_threshold,
    sharpness_threshold,
)

__all__ = ["DEFAULT_QUANTITIES", "NOISE_SOURCES", "QUANTITIES", "Instruments"]

QUANTITIES = (
    "loss",
    "grad_norm",
    "layers",
    "distance",
    "noise_scale",
    "sharpness",
    "preconditioned_sharpness",
    "grad_tests",
)
DEFAULT_QUANTITIES = ("loss", "grad_norm", "layers", "distance")
NOISE_SOURCES = ("auto", "micro_batches", "ddp", "split")
_PROBED = ("sharpness", "preconditioned_sharpness", "grad_tests")


def _check_quantities(quantities: Any) -> tuple[str, ...]:
    if isinstance(quantities, str) or not isinstance(quantities, Sequence):
        raise TypeError(f"quantities must be a list of names from {QUANTITIES}, got {quantities!r}")
    out = []
    for q in quantities:
        if not isinstance(q, str):
            raise TypeError(f"quantities must hold strings, got {type(q).__name__} {q!r}")
        if q not in QUANTITIES:
            raise ValueError(
                f"unknown quantity {q!r} in quantities{nearest(q, list(QUANTITIES))}; "
                f"known: {', '.join(QUANTITIES)}"
            )
        out.append(q)
    if not out:
        raise ValueError(f"quantities must name at least one of {QUANTITIES}")
    return tuple(dict.fromkeys(out))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Instruments:
    """Training-dynamics instruments for any model, optimizer and loop.

    Call :meth:`after_backward` after each (micro-batch) backward, optionally
    :meth:`before_step` after unscaling/clipping and before ``optimizer.step()``, and
    :meth:`after_step` after it. Every value stays a device tensor until :meth:`values`
    or :meth:`flush` copies all pending ones to the host in one transfer and appends them
    to :attr:`history`.

    Quantities (``quantities``; the first four are the default, measured every ``every``
    optimizer steps):

    - ``"loss"``: size-weighted mean of the losses passed to :meth:`after_backward`.
    - ``"grad_norm"``: global L2 norm of the gradients the optimizer steps with.
    - ``"layers"``: per parameter tensor ``layers/<name>/grad_norm``, ``weight_norm`` (the
      pre-step weights), ``update_norm`` (``|w_after - w_before|``), ``update_ratio``
      (update over weight norm; NaN where the weight norm is 0) and ``distance``
      (``|w - w_init|``, Cockpit's Distance); plus the global ``update_norm`` and
      ``update_ratio``. Costs a copy of the weights on measured steps and a few foreach
      passes (memory: two copies of the parameters).
    - ``"distance"``: global ``|w - w_init|``.
    - ``"noise_scale"``: McCandlish et al.'s simple noise scale ``B_simple`` (smoothed),
      ``critical_batch_size`` (~ ``B_simple``), ``batch_size`` and the smoothed
      ``noise_scale/grad_sq`` (``|G|^2``) and ``noise_scale/trace`` (``tr Sigma``). The
      second batch size comes from ``noise_source``: ``"micro_batches"`` (gradient
      accumulation: a subtraction, norm and copy of the gradients per micro-batch),
      ``"ddp"`` (this rank's gradient against the all-reduced one, via a DDP comm hook;
      pass the ``DistributedDataParallel`` model), ``"split"`` (the probe batch in
      ``split`` pieces: one extra forward and backward of the probe per interval), or
      ``"auto"`` (ddp for a DDP model, micro_batches when ``accumulation_steps > 1``,
      split when a probe batch is given).
    - ``"sharpness"`` (every ``sharpness_every`` steps): top Hessian eigenvalue of the
      probe batch's loss by warm-started Lanczos, with ``sharpness_threshold`` (2/lr for
      SGD, ``(2 + 2 beta)/lr`` with heavy-ball momentum); :attr:`hvp_counts` holds the
      Hessian-vector products of each measurement.
    - ``"preconditioned_sharpness"``: top eigenvalue of ``P^-1 H`` with Adam's
      preconditioner, with ``preconditioned_threshold`` ``(2 + 2 beta1)/((1 - beta1) lr)``.
    - ``"grad_tests"`` (every ``grad_tests_every`` steps): Cockpit's norm,
      inner-product and orthogonality tests and mean GSNR from per-sample gradients of the
      probe batch (``grad_tests/...``): about one forward and backward of the probe batch
      plus memory for one gradient per sample.

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
        sharpness_tol: Relative residual at which Lanczos stops (> 0).
        accumulation_steps: Micro-batches per optimizer step, if known (for ``"auto"``).
        seed: Seeds the first Lanczos start vector (the global RNG is never used).

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
        accumulation_steps: int | None = None,
        seed: int = 0,
        _probe_later: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
        self.quantities = _check_quantities(quantities)
        self.every = check_int("every", every, low=1)
        self.sharpness_every = check_int("sharpness_every", sharpness_every, low=1)
        self.grad_tests_every = check_int("grad_tests_every", grad_tests_every, low=1)
        self.split = check_int("split", split, low=2)
        self.smoothing = check_open_unit("smoothing", smoothing)
        self.sharpness_iters = check_int("sharpness_iters", sharpness_iters, low=1)
        self.sharpness_tol = check_positive("sharpness_tol", sharpness_tol, allow_inf=False)
        if accumulation_steps is not None:
            accumulation_steps = check_int("accumulation_steps", accumulation_steps, low=1)
        seed = check_int("seed", seed, low=0)
        check_choice("noise_source", noise_source, NOISE_SOURCES)
        if loss_fn is not None and batch_loss is not None:
            raise ValueError("pass either loss_fn= or batch_loss=, not both")
        if batch_loss is not None and not isinstance(batch_loss, BatchLoss):
            if not callable(batch_loss):
                raise TypeError(
                    f"batch_loss must be a BatchLoss or fn(model, batch), got "
                    f"{type(batch_loss).__name__}"
                )
            batch_loss = FunctionLoss(batch_loss)
        self.batch_loss: BatchLoss = (
            batch_loss if batch_loss is not None else as_batch_loss(loss_fn)
        )

        self._ddp: nn.Module | None = None
        if isinstance(model, nn.parallel.DistributedDataParallel):
            self._ddp, model = model, model.module
        self.model = model
        self.optimizer = optimizer
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(
                "model has no trainable parameters (requires_grad=True): nothing to measure"
            )
        self.names = [n for n, _ in named]
        self.device = named[0][1].device
        self.rank, self.world_size = _world()
        wants = set(self.quantities)
        if "preconditioned_sharpness" in wants and not all(
            "betas" in g for g in optimizer.param_groups
        ):
            raise ValueError(
                "quantities has 'preconditioned_sharpness', which needs an Adam-family "
                f"optimizer (param groups with 'betas'), got {type(optimizer).__name__}"
            )
        self.noise_source = self._pick_noise_source(
            noise_source, wants, probe_batch, accumulation_steps, _probe_later
        )
        if wants & set(_PROBED) and probe_batch is None and not _probe_later:
            needs = sorted(wants & set(_PROBED))
            raise ValueError(f"quantities {needs} need a probe_batch (a fixed batch to evaluate)")
        self.probe_batch: Any = None
        if probe_batch is not None:
            self.set_probe_batch(probe_batch)

        snapshots = bool(wants & {"layers", "distance"})
        self._layers = LayerNorms(named, snapshots)
        self._micro = MicroBatchNoise([p for _, p in named])
        self._ddp_noise = (
            DDPNoise(self._ddp, self.world_size)
            if "noise_scale" in wants and self.noise_source == "ddp"
            else None
        )
        self._ema = NoiseEMA(self.smoothing)
        self._sharp = SharpnessTracker(
            self.batch_loss, self.names, sharpness_iters, self.sharpness_tol, seed
        )
        self._psharp = SharpnessTracker(
            self.batch_loss, self.names, sharpness_iters, self.sharpness_tol, seed + 1
        )
        self._rec = Recorder(self.names)
        self.step = 0
        self._reset_step()
        self._snapshot_for = -1
        self._used_before_step = False
        if snapshots and self._due(1):
            self._weight_norms = self._layers.snapshot()
            self._snapshot_for = 1

    # ------------------------------------------------------------------ set-up
    def _pick_noise_source(
        self, source: str, wants: set[str], probe: Any, accum: int | None, later: bool
    ) -> str | None:
        if "noise_scale" not in wants:
            return None
        if source == "auto":
            if self._ddp is not None:
                return "ddp"
            if accum is not None and accum > 1:
                return "micro_batches"
            if probe is not None or later:
                return "split"
            raise ValueError(
                "quantities has 'noise_scale' but no second batch size is available: "
                "noise_source='auto' found no DistributedDataParallel model, no "
                "accumulation_steps > 1 and no probe_batch to split; pass one of them or "
                "noise_source='micro_batches'"
            )
        if source == "ddp" and self._ddp is None:
            raise ValueError(
                "noise_source='ddp' needs the DistributedDataParallel-wrapped model as model"
            )
        if source == "micro_batches" and accum == 1:
            raise ValueError(
                "noise_source='micro_batches' needs accumulation_steps > 1 (one micro-batch "
                "per step gives no second batch size)"
            )
        if source == "split" and probe is None and not later:
            raise ValueError("noise_source='split' needs a probe_batch to split")
        return source

    def set_probe_batch(self, batch: Any) -> None:
        """Fix the batch that probes evaluate (a detached copy on the model's device).

        Raises:
            ValueError: Split noise needs at least ``split`` samples; grad tests two.
        """
        size = self.batch_loss.size(batch)
        if self.noise_source == "split" and size < self.split:
            raise ValueError(
                f"probe_batch has {size} samples, fewer than split={self.split} pieces"
            )
        if "grad_tests" in self.quantities and size < 2:
            raise ValueError(f"grad_tests need a probe_batch of >= 2 samples, got {size}")
        self.probe_batch = _detached(to_device(batch, self.device))

    # ------------------------------------------------------------------ schedule
    def _due(self, step: int) -> bool:
        return step % self.every == 0

    def _reset_step(self) -> None:
        self._losses: list[tuple[torch.Tensor, float]] = []
        self._sizes = 0
        self._grad_scale: Any = None
        self._grads: torch.Tensor | None = None
        self._noise_norms: tuple[torch.Tensor, torch.Tensor, float, float] | None = None
        self._ddp_big: torch.Tensor | None = None
        self._before_done = False
        self._micro.reset()
        if self._ddp_noise is not None:
            self._ddp_noise.reset()

    @property
    def _noise_live(self) -> bool:
        return self.noise_source in ("micro_batches", "ddp")

    # ------------------------------------------------------------------ the hooks
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
            batch_size: Its number of samples (weights the loss; needed for noise).
            grad_scale: The GradScaler scale the loss was multiplied by, if any.
        """
        upcoming = self.step + 1
        if not self._due(upcoming):
            return
        weight = 1.0 if batch_size is None else float(batch_size)
        self._sizes += 0 if batch_size is None else int(batch_size)
        if loss is not None and "loss" in self.quantities:
            self._losses.append((loss.detach().float().reshape(()), weight))
        self._grad_scale = grad_scale
        if not self._noise_live or "noise_scale" not in self.quantities:
            return
        if batch_size is None:
            raise ValueError(
                f"noise_source={self.noise_source!r} needs after_backward(..., batch_size=n)"
            )
        if self.noise_source == "micro_batches":
            self._micro.after_backward(int(batch_size), grad_scale)
        elif self._ddp_noise is not None and self._ddp_noise.fired and self._ddp_big is None:
            # The all-reduce has run in this backward: .grad is now the global mean.
            grads = [p.grad for p in self._layers.params if p.grad is not None]
            big = torch.stack([n.float() for n in torch._foreach_norm(grads)]).square().sum()
            self._ddp_big = big / _sq(grad_scale, big)

    def before_step(self) -> None:
        """Call after unscaling and clipping, before ``optimizer.step()`` (optional)."""
        self._used_before_step = True
        self._before()

    def _before(self, snapshot: bool = True) -> None:
        if self._before_done or not self._due(self.step + 1):
            return
        self._before_done = True
        wants = self.quantities
        if "grad_norm" in wants or "layers" in wants:
            self._grads = self._layers.grad_norms()
        if snapshot and ("layers" in wants or "distance" in wants):
            self._weight_norms = self._layers.snapshot()
            self._snapshot_for = self.step + 1
        if "noise_scale" in wants and self.noise_source == "micro_batches":
            self._noise_norms = self._micro.norms(self._grad_scale)
        elif "noise_scale" in wants and self.noise_source == "ddp":
            dn = self._ddp_noise
            if dn is not None and dn.local_sq is not None and self._ddp_big is not None:
                local = dn.local_sq / _sq(self._grad_scale, dn.local_sq)
                b = float(self._sizes)
                self._noise_norms = (local, self._ddp_big, b, b * self.world_size)

    def after_step(self) -> None:
        """Call after ``optimizer.step()`` (before or after ``zero_grad``); no host sync
        except inside probe measurements at their intervals."""
        self._before(snapshot=False)
        self.step += 1
        step = self.step
        if self._due(step):
            self._record_cheap(step)
        self._probes(step)
        self._reset_step()
        wants = self.quantities
        if (
            not self._used_before_step
            and ("layers" in wants or "distance" in wants)
            and self._due(step + 1)
        ):
            # No before_step() in this loop: the weights now are the next step's pre-step ones.
            self._weight_norms = self._layers.snapshot()
            self._snapshot_for = step + 1

    def skip_step(self) -> None:
        """Forget the step in progress (the optimizer skipped it, e.g. a non-finite loss)."""
        self._reset_step()

    # ------------------------------------------------------------------ measurements
    def _record_cheap(self, step: int) -> None:
        wants = self.quantities
        rec = self._rec.begin(step)
        if "loss" in wants and self._losses:
            losses = torch.stack([t for t, _ in self._losses])
            w = torch.tensor([w for _, w in self._losses], device=losses.device)
            rec.add("loss", (losses * w).sum() / w.sum())
        if "grad_norm" in wants and self._grads is not None:
            rec.add("grad_norm", torch.linalg.vector_norm(self._grads))
        snap_ok = self._snapshot_for == step
        if "layers" in wants:
            if self._grads is not None:
                rec.add_layers("grad_norm", self._grads)
            if snap_ok:
                w, u = self._weight_norms, self._layers.update_norms()
                ratio = torch.where(w > 0, u / w, torch.full_like(u, math.nan))
                rec.add_layers("weight_norm", w)
                rec.add_layers("update_norm", u)
                rec.add_layers("update_ratio", ratio)
                u_all, w_all = torch.linalg.vector_norm(u), torch.linalg.vector_norm(w)
                rec.add("update_norm", u_all)
                rec.add("update_ratio", u_all / w_all)
        if "layers" in wants or "distance" in wants:
            d = self._layers.distances()
            if "layers" in wants:
                rec.add_layers("distance", d)
            if "distance" in wants:
                rec.add("distance", torch.linalg.vector_norm(d))
        if self._noise_norms is not None:
            small, big, b_s, b_b = self._noise_norms
            ns, g2, trace = self._ema.update(*noise_estimates(small, big, b_s, b_b))
            rec.add("noise_scale", ns)
            rec.add("critical_batch_size", ns)
            rec.add("noise_scale/grad_sq", g2)
            rec.add("noise_scale/trace", trace)
            used = self._sizes * self.world_size if self._sizes else b_b
            rec.host("batch_size", float(used))
        lr = self.optimizer.param_groups[0]["lr"]
        if isinstance(lr, torch.Tensor):
            rec.add("lr", lr.detach().float().reshape(()))
        else:
            rec.host("lr", float(lr))
        self._rec.end(rec)

    def _probes(self, step: int) -> None:
        wants = set(self.quantities)
        jobs = []
        if step % self.sharpness_every == 0:
            jobs += [q for q in ("sharpness", "preconditioned_sharpness") if q in wants]
        if "grad_tests" in wants and step % self.grad_tests_every == 0:
            jobs.append("grad_tests")
        split_noise = "noise_scale" in wants and self.noise_source == "split" and self._due(step)
        if not (jobs or split_noise) or self.rank != 0 or self.probe_batch is None:
            return
        rec = self._rec.begin(step)
        with preserved(self.model, rng=True):
            self.model.eval()
            if "sharpness" in jobs:
                top, _ = self._sharp.measure(self.model, self.probe_batch)
                rec.host("sharpness", top)
                rec.host("sharpness_threshold", sharpness_threshold(self.optimizer))
            if "preconditioned_sharpness" in jobs:
                params = dict(self.model.named_parameters())
                d = adam_preconditioner(self.optimizer, [params[n] for n in self.names])
                if d is not None:
                    top, _ = self._psharp.measure(self.model, self.probe_batch, d)
                    rec.host("preconditioned_sharpness", top)
                    rec.host("preconditioned_threshold", preconditioned_threshold(self.optimizer))
            if "grad_tests" in jobs:
                for name, value in gradient_tests(
                    self.model, self.batch_loss, self.probe_batch, self.names
                ).items():
                    rec.add(f"grad_tests/{name}", value)
            if split_noise:
                self._split_noise(rec)
        self._rec.end(rec)

    def _split_noise(self, rec: Any) -> None:
        n = self.batch_loss.size(self.probe_batch)
        bounds = [round(i * n / self.split) for i in range(self.split + 1)]
        pieces = [_slice(self.probe_batch, a, b) for a, b in zip(bounds, bounds[1:])]
        small, big = split_gradient_norms(self.model, self.batch_loss, pieces, self.names)
        ns, g2, trace = self._ema.update(*noise_estimates(small, big, n / self.split, n))
        rec.add("noise_scale", ns)
        rec.add("critical_batch_size", ns)
        rec.add("noise_scale/grad_sq", g2)
        rec.add("noise_scale/trace", trace)
        used = self._sizes * self.world_size if self._sizes else n
        rec.host("batch_size", float(used))

    # ------------------------------------------------------------------ results
    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """Key -> ``[(optimizer step, value), ...]`` of everything flushed so far."""
        return self._rec.history

    @property
    def hvp_counts(self) -> list[int]:
        """Hessian-vector products per sharpness measurement (preconditioned ones apart:
        :attr:`preconditioned_hvp_counts`)."""
        return list(self._sharp.hvp_counts)

    @property
    def preconditioned_hvp_counts(self) -> list[int]:
        return list(self._psharp.hvp_counts)

    def flush(self) -> None:
        """Copy every pending value to the host (one transfer) and extend :attr:`history`."""
        self._rec.flush()

    def values(self) -> dict[str, float]:
        """Flush, then the latest value of every quantity measured so far."""
        self.flush()
        return dict(self._rec.latest)

    def figures(self) -> dict[str, Any]:
        """The figures of :mod:`optiscope.instruments.plots` for what was measured."""
        from optiscope.instruments import plots

        return plots.figures(self.history)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``torch.save`` (loads with ``weights_only=True``); flushes first."""
        self.flush()
        return {
            "step": self.step,
            "names": list(self.names),
            "initial": [t.clone() for t in self._layers.initial],
            "ema": self._ema.state_dict(),
            "sharpness": self._sharp.state_dict(),
            "preconditioned_sharpness": self._psharp.state_dict(),
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
        self._rec.flush()
        self.step = int(state["step"])
        with torch.no_grad():
            for mine, saved in zip(self._layers.initial, state["initial"]):
                mine.copy_(saved)
        self._ema.load_state_dict(state["ema"])
        self._sharp.load_state_dict(state["sharpness"], self.device)
        self._psharp.load_state_dict(state["preconditioned_sharpness"], self.device)
        self._rec.load_state_dict(state["recorder"])
        if state["probe_batch"] is not None:
            self.probe_batch = to_device(state["probe_batch"], self.device)
        self._reset_step()
        if self._layers.buffers and self._due(self.step + 1):
            self._weight_norms = self._layers.snapshot()
            self._snapshot_for = self.step + 1


def _sq(scale: Any, like: torch.Tensor) -> torch.Tensor | float:
    if scale is None:
        return 1.0
    return torch.as_tensor(scale, device=like.device, dtype=like.dtype).square()


def _detached(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.detach().clone()
    if isinstance(batch, dict):
        return {k: _detached(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_detached(v) for v in batch)
    return batch
