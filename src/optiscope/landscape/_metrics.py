"""What is measured at each grid point, and the checks on user-given directions.

A metric is ``"loss"`` (the :class:`~optiscope.batch_loss.BatchLoss`'s scalar),
``"accuracy"`` (the project's one set of accuracy rules, ``_internal.accuracy``) or a
callable ``fn(output, target) -> scalar`` (``output`` is the logits when the model returns
an object carrying them). Each point's metric is kept as a pair ``(sum, count)``: the loss
and callables weigh their batch mean by :meth:`BatchLoss.size`, accuracy counts correct
and scored labels, so over a DataLoader the result is the mean over all samples (or all
scored labels: token-level accuracy with ``ignore_index`` labels left out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from optiscope._internal.accuracy import count_correct, infer_task
from optiscope.batch_loss import BatchLoss, FunctionLoss, TargetLoss, logits_of

__all__ = ["Metric", "Measure", "Scorer", "resolve_metrics", "bind_metrics", "check_directions"]

Metric = Callable[[Any, Any], torch.Tensor]


@dataclass(frozen=True)
class Measure:
    """One requested metric: its name, its kind (``loss``/``accuracy``/``callable``)."""

    name: str
    kind: str
    fn: Metric | None = None


def resolve_metrics(metrics: Sequence[str | Metric] | Mapping[str, Metric]) -> list[Measure]:
    """Turn ``("loss", "accuracy", my_fn)`` or ``{"name": fn}`` into measures, checked."""
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    else:
        if isinstance(metrics, str) or callable(metrics):
            metrics = (metrics,)
        items = [(_default_name(m), m) for m in metrics]
    out: dict[str, Measure] = {}
    for name, m in items:
        if name in out:
            raise ValueError(f"metric name {name!r} given twice")
        out[str(name)] = _measure(str(name), m)
    if not out:
        raise ValueError("metrics is empty: give at least one, e.g. ('loss',)")
    return list(out.values())


def _default_name(m: Any) -> str:
    if isinstance(m, str):
        return m
    if callable(m):
        return getattr(m, "__name__", type(m).__name__)
    raise TypeError(f"a metric must be a name or a callable, got {type(m).__name__}")


def _measure(name: str, m: Any) -> Measure:
    if m in ("loss", "accuracy"):
        return Measure(name, m)
    if isinstance(m, str) or not callable(m):
        raise ValueError(
            f"unknown metric {m!r}: use 'loss', 'accuracy' or a callable(outputs, targets)"
        )
    return Measure(name, "callable", m)


class Scorer:
    """One evaluated batch at one point -> a ``(M, 2)`` float64 tensor of (sum, count)."""

    def __init__(self, measures: list[Measure], task: str | None) -> None:
        self.measures = measures
        self.task = task

    def __call__(self, loss: torch.Tensor, output: Any, target: Any, size: int) -> torch.Tensor:
        rows = [self._pair(m, loss, output, target, size) for m in self.measures]
        return torch.stack([torch.stack(r) for r in rows])

    def _pair(self, m: Measure, loss, output, target, size) -> tuple[torch.Tensor, torch.Tensor]:
        n = torch.full((), float(size), dtype=torch.float64, device=loss.device)
        if m.kind == "loss":
            return loss.to(torch.float64) * size, n
        pred = _prediction(output)
        if m.kind == "accuracy":
            correct, scored = count_correct(pred, target, self.task)
            if isinstance(scored, torch.Tensor):
                return correct.to(torch.float64), scored.to(torch.float64)
            return correct.to(torch.float64), torch.full_like(n, float(scored))
        v = m.fn(pred, target)
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v, dtype=torch.float32, device=loss.device)
        if v.dim() != 0:
            raise ValueError(
                f"metric {m.name!r} must return a scalar, got shape {tuple(v.shape)}; "
                "use a loss with reduction='mean'"
            )
        return v.to(torch.float32).to(torch.float64) * size, n


def _prediction(output: Any) -> Any:
    logits = logits_of(output)
    return output if logits is None else logits


def bind_metrics(measures: list[Measure], bl: BatchLoss, output: Any, target: Any) -> Scorer:
    """A :class:`Scorer` for ``measures``, checked against one real output of the model.

    Accuracy uses the task ``infer_task`` decides from the loss and this output.

    Raises:
        ValueError: A metric other than ``"loss"`` where it cannot be computed: a
            :class:`FunctionLoss` (it hides the output), no target, a regression, or an
            output whose shape does not match the labels.
    """
    others = [m.name for m in measures if m.kind != "loss"]
    if others and isinstance(bl, FunctionLoss):
        raise ValueError(
            f"metrics {others} need the model's output and targets, which a FunctionLoss "
            "hides; use metrics=('loss',) or a loss_fn(output, target)"
        )
    task = None
    if any(m.kind == "accuracy" for m in measures):
        task = _accuracy_task(bl, _prediction(output), target)
    return Scorer(measures, task)


def _accuracy_task(bl: BatchLoss, pred: Any, target: Any) -> str:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(
            "metric 'accuracy' needs a tensor output (or .logits) and tensor labels; got "
            f"output {type(pred).__name__} and target {type(target).__name__}"
        )
    loss = bl.loss_fn if isinstance(bl, TargetLoss) else None
    task = infer_task(loss, pred, target)
    if task == "regression":
        raise ValueError(
            "metric 'accuracy' cannot be computed: this is a regression "
            f"({type(loss).__name__ if loss is not None else 'float targets'}); "
            "use metrics=('loss',)"
        )
    if count_correct(pred, target, task) is None:
        raise ValueError(
            f"metric 'accuracy' cannot be computed: output shape {tuple(pred.shape)} does "
            f"not match labels of shape {tuple(target.shape)}"
        )
    return task


def check_directions(
    model: nn.Module, directions: Sequence[Mapping[str, torch.Tensor]]
) -> tuple[list[str], list[dict[str, torch.Tensor]]]:
    """Validate direction dicts against the model.

    A tied parameter may be named by any of its names (a ``state_dict`` lists
    ``lm_head.weight`` beside the ``embed.weight`` it shares); entries are keyed by the
    name ``named_parameters`` gives it, and two names of one tensor must agree.

    Returns:
        The parameter names the directions touch (in the model's order) and the
        directions keyed by those names.
    """
    params = dict(model.named_parameters())
    canonical = _canonical_names(model)
    touched: set[str] = set()
    out = []
    for k, d in enumerate(directions):
        if not isinstance(d, Mapping):
            raise TypeError(
                f"direction {k + 1} must be a dict of name -> tensor, got {type(d).__name__}"
            )
        if not d:
            raise ValueError(f"direction {k + 1} is empty")
        keyed: dict[str, torch.Tensor] = {}
        for name, t in d.items():
            _check_entry(k, name, t, params, canonical)
            main = canonical[name]
            if main in keyed and not torch.equal(keyed[main], t):
                raise ValueError(
                    f"direction {k + 1} gives different tensors for {main!r} and {name!r}, "
                    "which are one tied parameter"
                )
            keyed[main] = t
        touched.update(keyed)
        out.append(keyed)
    return [n for n in params if n in touched], out


def _canonical_names(model: nn.Module) -> dict[str, str]:
    first: dict[int, str] = {}
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names[name] = first.setdefault(id(p), name)
    return names


def _check_entry(
    k: int, name: str, t: Any, params: dict[str, torch.Tensor], canonical: dict[str, str]
) -> None:
    if name not in canonical:
        raise ValueError(
            f"direction {k + 1} names {name!r}, which is not a parameter of the model; "
            f"the parameter names are: {', '.join(params)}"
        )
    shape = tuple(params[canonical[name]].shape)
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"direction {k + 1}[{name!r}] has shape {got}, expected {shape}")
    if not t.is_floating_point():
        raise TypeError(f"direction {k + 1}[{name!r}] must be floating point")
