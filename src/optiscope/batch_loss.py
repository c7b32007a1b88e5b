"""How a batch becomes a loss: one concept used by every entry point that evaluates one.

The guide's way is ``loss_fn(model(inputs), targets)`` on ``(inputs, targets)`` batches and
stays the default. Models people train today also take several inputs, dict batches
(``input_ids``, ``attention_mask``, ``labels``) or compute their own loss (an output with
``.loss`` or ``["loss"]``, as Hugging Face models do). A :class:`BatchLoss` says, for one
batch, how to call the model and how its output becomes a scalar loss.

Every ``loss_fn`` argument in optiscope (``AdvancedTrainer``, ``lr_find``, landscapes,
curvature, instruments) accepts, through :func:`as_batch_loss`:

- a plain ``loss_fn(output, target)`` callable -> :class:`TargetLoss`: ``(x, y)``,
  ``(x1, ..., xn, y)``, ``(inputs_dict, y)`` and dict batches with a ``labels`` key;
- ``None`` -> :class:`ModelLoss`: the model computes its own loss (``model(**batch)`` for
  a dict, ``model(*batch)`` for a tuple) and returns it as ``.loss`` or ``["loss"]``;
- a :class:`BatchLoss` instance, used as it is; wrap any ``fn(model, batch) -> scalar``
  in :class:`FunctionLoss`.

Batch sizes for weighting means come from the batch (:meth:`BatchLoss.size`), never from
``batch[0]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

__all__ = [
    "BatchLoss",
    "Evaluated",
    "FunctionLoss",
    "ModelLoss",
    "TargetLoss",
    "as_batch_loss",
    "logits_of",
    "to_device",
]

Args = tuple[tuple[Any, ...], dict[str, Any], Any]


@dataclass(frozen=True)
class Evaluated:
    """One batch's loss with what produced it.

    Attributes:
        loss: The scalar loss (mean over the batch).
        output: The model's raw output (None when a :class:`FunctionLoss` hides it).
        target: The labels the loss was computed against, or None.
        size: The number of samples, for weighting means over batches.
    """

    loss: torch.Tensor
    output: Any
    target: Any
    size: int


class BatchLoss:
    """How one batch becomes a scalar loss (the base of the built-in adapters).

    Subclasses implement :meth:`split` (the model's positional and keyword inputs and the
    target) and :meth:`loss` (output and target to a scalar). :meth:`evaluate` runs both,
    with the model called directly or through ``torch.func.functional_call``.
    """

    labels: str = "labels"

    def split(self, batch: Any) -> Args:
        """``(args, kwargs, target)`` for ``model(*args, **kwargs)``; target may be None."""
        raise NotImplementedError

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """The scalar loss of ``output`` against ``target``."""
        raise NotImplementedError

    def size(self, batch: Any) -> int:
        """Samples in ``batch``: the target's first dimension, else the first tensor's."""
        _, _, target = self.split(batch)
        if isinstance(target, torch.Tensor) and target.dim() > 0:
            return int(target.shape[0])
        return _first_dim(batch)

    def evaluate(
        self,
        model: nn.Module,
        batch: Any,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> Evaluated:
        """Run the model on ``batch`` and compute the loss.

        Args:
            model: The network.
            batch: One batch, in any form :meth:`split` understands.
            state: Parameters and buffers to call the model with instead of its own
                (``torch.func.functional_call``); None calls ``model`` directly.
        """
        args, kwargs, target = self.split(batch)
        if state is None:
            output = model(*args, **kwargs)
        else:
            output = functional_call(model, state, args, kwargs)
        loss = self.loss(output, target)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"the loss must be a scalar tensor (mean reduction), got {got}")
        return Evaluated(loss, output, target, self.size(batch))

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The scalar loss of ``model`` on ``batch``."""
        return self.evaluate(model, batch).loss


class TargetLoss(BatchLoss):
    """``loss_fn(model(inputs), target)``: the guide's way, for any batch layout.

    Batches may be ``(x, y)``, ``(x1, ..., xn, y)`` (the model gets ``x1, ..., xn``),
    ``(x,)`` (then ``loss_fn(output)``), ``(inputs_dict, y)`` (keyword inputs), or a dict
    whose ``labels`` entry is the target and whose other entries are keyword inputs. When
    the output carries ``logits`` (an HF output or a dict), the loss sees the logits.

    Args:
        loss_fn: ``loss_fn(output, target) -> scalar`` with mean reduction.
        labels: The key of the target in dict batches.

    Example:
        >>> import torch
        >>> bl = TargetLoss(torch.nn.functional.mse_loss)
        >>> model = torch.nn.Linear(2, 1)
        >>> batch = (torch.zeros(4, 2), torch.zeros(4, 1))
        >>> _ = torch.nn.init.zeros_(model.bias); bl(model, batch).item(), bl.size(batch)
        (0.0, 4)
    """

    def __init__(self, loss_fn: Callable[..., torch.Tensor], *, labels: str = "labels") -> None:
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if not isinstance(labels, str):
            raise TypeError(f"labels must be a str, got {type(labels).__name__}")
        self.loss_fn = loss_fn
        self.labels = labels

    def split(self, batch: Any) -> Args:
        if isinstance(batch, Mapping):
            if self.labels not in batch:
                raise TypeError(
                    f"a dict batch needs a {self.labels!r} entry for loss_fn(output, target); "
                    f"got keys {sorted(batch)}; pass loss_fn=None if the model computes its "
                    "own loss"
                )
            kwargs = {k: v for k, v in batch.items() if k != self.labels}
            return (), kwargs, batch[self.labels]
        if isinstance(batch, (tuple, list)) and batch:
            if len(batch) == 1:
                return _inputs(batch[0]) + (None,)
            if len(batch) == 2:
                return _inputs(batch[0]) + (batch[1],)
            return tuple(batch[:-1]), {}, batch[-1]
        raise TypeError(
            "a batch must be a tuple (inputs, targets), (x1, ..., xn, targets) or a dict "
            f"with {self.labels!r}, got {_describe(batch)}"
        )

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        logits = logits_of(output)
        pred = output if logits is None else logits
        return self.loss_fn(pred) if target is None else self.loss_fn(pred, target)


class ModelLoss(BatchLoss):
    """The model computes its own loss and returns it as ``.loss`` or ``["loss"]``.

    Dict batches are passed as keywords (``model(**batch)``, labels included), tuples as
    positional arguments (``model(*batch)``), a tensor as the only argument.

    Args:
        labels: The key of the labels in dict batches (used for accuracy and sizes).

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.fc = torch.nn.Linear(2, 1)
        ...     def forward(self, x, labels):
        ...         return {"loss": torch.nn.functional.mse_loss(self.fc(x), labels)}
        >>> batch = {"x": torch.zeros(3, 2), "labels": torch.zeros(3, 1)}
        >>> net = Net(); _ = torch.nn.init.zeros_(net.fc.bias)
        >>> ModelLoss()(net, batch).item(), ModelLoss().size(batch)
        (0.0, 3)
    """

    def __init__(self, *, labels: str = "labels") -> None:
        if not isinstance(labels, str):
            raise TypeError(f"labels must be a str, got {type(labels).__name__}")
        self.labels = labels

    def split(self, batch: Any) -> Args:
        if isinstance(batch, Mapping):
            return (), dict(batch), batch.get(self.labels)
        if isinstance(batch, (tuple, list)) and batch:
            return tuple(batch), {}, None
        if isinstance(batch, torch.Tensor):
            return (batch,), {}, None
        raise TypeError(
            f"a batch for a model that computes its own loss must be a dict, a tuple or a "
            f"tensor, got {_describe(batch)}"
        )

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        loss = getattr(output, "loss", None)
        if loss is None and isinstance(output, Mapping):
            loss = output.get("loss")
        if loss is None:
            raise TypeError(
                "loss_fn is None, so the model must return its loss as .loss or ['loss'], "
                f"got {_describe(output)}; pass a loss_fn(output, target) otherwise"
            )
        return loss


class FunctionLoss(BatchLoss):
    """Any ``fn(model, batch) -> scalar``: full control, no accuracy.

    Functional evaluation (landscapes, curvature) calls ``fn`` with the model's parameters
    swapped for the evaluated ones, through a bound module.

    Args:
        fn: ``fn(model, batch) -> scalar tensor`` with mean reduction.

    Example:
        >>> import torch
        >>> fl = FunctionLoss(lambda m, b: m(b["x"]).pow(2).mean())
        >>> fl(torch.nn.Linear(2, 1, bias=False), {"x": torch.zeros(5, 2)}).item()
        0.0
    """

    def __init__(self, fn: Callable[[nn.Module, Any], torch.Tensor]) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def size(self, batch: Any) -> int:
        return _first_dim(batch)

    def evaluate(
        self,
        model: nn.Module,
        batch: Any,
        state: Mapping[str, torch.Tensor] | None = None,
    ) -> Evaluated:
        if state is None:
            loss = self.fn(model, batch)
        else:
            bound = _Bound(model, self.fn)
            loss = functional_call(bound, {f"model.{k}": v for k, v in state.items()}, (batch,))
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"the loss must be a scalar tensor (mean reduction), got {got}")
        return Evaluated(loss, None, None, self.size(batch))


class _Bound(nn.Module):
    """``fn(model, batch)`` as a module, so ``functional_call`` can swap the model's state."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.fn(self.model, batch)


def as_batch_loss(loss_fn: Any) -> BatchLoss:
    """The :class:`BatchLoss` for a ``loss_fn`` argument.

    Args:
        loss_fn: A BatchLoss (returned as is), ``None`` (the model computes its loss:
            :class:`ModelLoss`) or a ``loss_fn(output, target)`` callable
            (:class:`TargetLoss`).

    Raises:
        TypeError: ``loss_fn`` is none of these.

    Example:
        >>> import torch
        >>> type(as_batch_loss(torch.nn.CrossEntropyLoss())).__name__
        'TargetLoss'
        >>> type(as_batch_loss(None)).__name__
        'ModelLoss'
    """
    if isinstance(loss_fn, BatchLoss):
        return loss_fn
    if loss_fn is None:
        return ModelLoss()
    if callable(loss_fn):
        return TargetLoss(loss_fn)
    raise TypeError(
        "loss_fn must be a loss_fn(output, target) callable, a BatchLoss, or None (the model "
        f"computes its own loss), got {type(loss_fn).__name__}"
    )


def logits_of(output: Any) -> torch.Tensor | None:
    """The prediction tensor in a model output: itself, ``.logits`` or ``["logits"]``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    return logits if isinstance(logits, torch.Tensor) else None


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    """``batch`` with every tensor in it (nested tuples, lists, dicts) moved to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})
    return batch


def _inputs(x: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(x, Mapping):
        return (), dict(x)
    return (x,), {}


def _first_dim(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    items = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(items, (list, tuple)) or isinstance(batch, Mapping):
        for v in items:
            if isinstance(v, (torch.Tensor, list, tuple, Mapping)):
                return _first_dim(v)
    raise TypeError(f"cannot tell the number of samples in a batch: {_describe(batch)}")


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"a {type(obj).__name__} with keys {sorted(map(str, obj))}"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(type(v).__name__ for v in obj[:4])
        return f"a {type(obj).__name__} of {len(obj)} ({inner}{', ...' if len(obj) > 4 else ''})"
    return f"a {type(obj).__name__}"
