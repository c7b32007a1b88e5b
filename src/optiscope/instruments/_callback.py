"""The instruments as an :class:`~optiscope.training.AdvancedTrainer` callback."""

from __future__ import annotations

from typing import Any

from optiscope.batch_loss import BatchLoss, Evaluated
from optiscope.instruments._instruments import Instruments
from optiscope.instruments._options import PROBED

__all__ = ["InstrumentsCallback"]


class _CaptureFirst(BatchLoss):
    """Wraps the trainer's batch loss until the first training batch has been seen."""

    def __init__(self, inner: BatchLoss, sink: Any) -> None:
        self.inner = inner
        self.sink = sink
        self.labels = inner.labels

    def split(self, batch: Any) -> Any:
        return self.inner.split(batch)

    def loss(self, output: Any, target: Any) -> Any:
        return self.inner.loss(output, target)

    def size(self, batch: Any) -> int:
        return self.inner.size(batch)

    def evaluate(self, model: Any, batch: Any, state: Any = None) -> Evaluated:
        self.sink(batch)
        return self.inner.evaluate(model, batch, state)


class InstrumentsCallback:
    """Runs :class:`Instruments` inside ``AdvancedTrainer`` (and is checkpointed with it).

    Takes the keyword arguments of :class:`Instruments` except ``model``/``optimizer``
    (``loss_fn``/``batch_loss`` default to the trainer's). On ``on_train_start`` it
    builds the instruments on the trainer's model and optimizer, with
    ``accumulation_steps`` from the trainer, the DDP wrapper under torch.distributed
    (so ``noise_source="auto"`` picks ``"ddp"``) and, when no ``probe_batch`` is given,
    the first training batch as the probe (captured as the trainer evaluates it).
    Micro-batch losses and sizes come from the trainer's records, the GradScaler scale
    from its scaler; a step the trainer skips (non-finite) is forgotten. ``on_log``
    flushes (one host copy per log point) and, when the trainer writes TensorBoard,
    adds the values recorded since the last log point as ``instruments/<key>`` scalars
    at the steps they were measured at (histograms stay in :attr:`histograms`).
    ``state_dict`` closes a step in progress first, so a checkpoint written mid-step
    resumes to the same history bits.

    Attributes:
        instruments: The :class:`Instruments` (None before training starts).

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from optiscope import AdvancedTrainer
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(4, 3)
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
        >>> cb = InstrumentsCallback(quantities=["loss", "layers", "sharpness"], sharpness_every=2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> t = AdvancedTrainer(model, opt, torch.nn.CrossEntropyLoss(), verbose=False,
        ...                     callbacks=[cb], log_interval=2)
        >>> t.train(DataLoader(data, batch_size=8), None, epochs=1)
        >>> [s for s, _ in cb.history["sharpness"]], len(cb.instruments.hvp_counts)
        ([2, 4], 2)
    """

    def __init__(self, **kwargs: Any) -> None:
        for bad in ("model", "optimizer"):
            if bad in kwargs:
                raise TypeError(
                    f"InstrumentsCallback takes the trainer's {bad}; do not pass {bad}="
                )
        self.kwargs = kwargs
        self.instruments: Instruments | None = None
        self._pending_state: dict[str, Any] | None = None
        self._trainer: Any = None
        self._open_step: int | None = None
        self._logged: dict[str, int] = {}  # history entries already sent to TensorBoard
        _check_early(kwargs)

    # ------------------------------------------------------------ hooks
    def on_train_start(self, trainer: Any) -> None:
        self._trainer = trainer
        if self.instruments is None:
            kwargs = dict(self.kwargs)
            if "loss_fn" not in kwargs and "batch_loss" not in kwargs:
                kwargs["batch_loss"] = trainer.batch_loss
            kwargs.setdefault("accumulation_steps", trainer.config.grad_accum_steps)
            # Under torch.distributed the trainer trains its DDP wrapper (``_net``); the
            # instruments unwrap it and hook its all-reduce for the noise scale.
            net = getattr(trainer, "_net", trainer.model)
            self.instruments = Instruments(net, trainer.optimizer, **kwargs, _probe_later=True)
        inst = self.instruments
        if self._pending_state is not None:
            inst.load_state_dict(self._pending_state)
            self._pending_state = None
        # What a resumed history already holds was logged by the run that recorded it.
        self._logged = {k: len(v) for k, v in inst.history.items()} if trainer.logs_scalars else {}
        needs_probe = set(inst.quantities) & set(PROBED) or inst.noise_source == "split"
        if needs_probe and inst.probe_batch is None:
            self._install_capture(trainer)

    def _install_capture(self, trainer: Any) -> None:
        original = trainer.batch_loss

        def sink(batch: Any) -> None:
            assert self.instruments is not None
            self.instruments.set_probe_batch(batch)
            trainer.batch_loss = original

        trainer.batch_loss = _CaptureFirst(original, sink)

    def on_after_backward(self, trainer: Any) -> None:
        inst = self.instruments
        if inst is None:
            return
        metrics = trainer.metrics
        scale = None
        if trainer.scaler is not None:
            scale = trainer.scaler._get_scale_async()
        inst.after_backward(metrics.losses[-1], batch_size=metrics.sizes[-1], grad_scale=scale)

    def on_before_optimizer_step(self, trainer: Any) -> None:
        if self.instruments is None:
            return
        self._open_step = trainer.global_step
        self.instruments.before_step()

    def on_step_end(self, trainer: Any) -> None:
        self._close_step(trainer)

    def _close_step(self, trainer: Any) -> None:
        inst = self.instruments
        if inst is None or self._open_step is None:
            return
        if trainer.global_step > self._open_step:
            inst.after_step()
        else:
            inst.skip_step()
        self._open_step = None

    def on_log(self, trainer: Any) -> None:
        if self.instruments is not None:
            self.instruments.flush()
            self._log_new(trainer)

    def on_train_end(self, trainer: Any) -> None:
        if self.instruments is not None:
            self.instruments.flush()
            self._log_new(trainer)

    def _log_new(self, trainer: Any) -> None:
        """The values flushed since the last call, to the trainer's TensorBoard (if any)."""
        if self.instruments is None or not trainer.logs_scalars:
            return
        items = []
        for key, series in self.instruments.history.items():
            done = self._logged.get(key, 0)
            items += [(f"instruments/{key}", value, step) for step, value in series[done:]]
            self._logged[key] = len(series)
        trainer.log_scalars(items)

    # ------------------------------------------------------------ results
    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """The instruments' history (flushed first); empty before training."""
        if self.instruments is None:
            return {}
        self.instruments.flush()
        return self.instruments.history

    @property
    def histograms(self) -> dict[str, list[tuple[int, Any]]]:
        """The instruments' histograms (flushed first); empty before training."""
        if self.instruments is None:
            return {}
        self.instruments.flush()
        return self.instruments.histograms

    def state_dict(self) -> dict[str, Any]:
        if self.instruments is None:
            return {"instruments": self._pending_state}
        if self._trainer is not None:
            self._close_step(self._trainer)  # a checkpoint between the update and on_step_end
        return {"instruments": self.instruments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("instruments")
        if saved is None:
            return
        if self.instruments is None:
            self._pending_state = saved  # applied when training starts
        else:
            self.instruments.load_state_dict(saved)


def _check_early(kwargs: dict[str, Any]) -> None:
    """Raise the errors :class:`Instruments` would raise, before training starts.

    Builds the instruments once on a one-weight stand-in model with an Adam optimizer
    (which has every state a quantity can need); a DDP noise source is checked when the
    trainer's model is known.
    """
    import torch

    stand_in = torch.nn.Linear(1, 1)
    checked = dict(kwargs)
    if checked.get("noise_source") == "ddp":
        checked["noise_source"] = "auto"
    checked.pop("probe_batch", None)  # its size is checked against the real loss later
    Instruments(stand_in, torch.optim.Adam(stand_in.parameters()), **checked, _probe_later=True)
