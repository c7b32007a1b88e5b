"""``line`` and ``plane``: the loss (and other metrics) around the weights, as a Landscape."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.checks import check_int
from optiscope.batch_loss import BatchLoss
from optiscope.landscape._choice import GridSettings
from optiscope.landscape._distributed import active_group, gather_points, shard_bounds
from optiscope.landscape._engine import evaluate_points
from optiscope.landscape._metrics import Metric, resolve_metrics
from optiscope.landscape._result import Landscape

__all__ = ["line", "plane", "grid_coordinates"]


def _check_range(name: str, r: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {r!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise ValueError(f"{name} must satisfy low < high (finite), got {r!r}")
    return lo, hi


def grid_coordinates(value_range: Sequence[float], num_points: int, name: str = "alpha_range"):
    """``np.linspace(low, high, num_points)`` after checking the arguments.

    Raises:
        TypeError: ``num_points`` is not an integer.
        ValueError: ``num_points < 2`` or a range that is not ``low < high``.

    Example:
        >>> grid_coordinates((-1, 1), 5).tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    num_points = check_int("num_points", num_points, low=2)
    lo, hi = _check_range(name, value_range)
    return np.linspace(lo, hi, num_points)


def _describe(d: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    meta = getattr(d, "meta", None)
    return dict(meta) if isinstance(meta, dict) else {"parameters": len(d)}


def _run(
    model, loss_fn, data, targets, directions, coefs, *, metrics, distributed, group, **kw
) -> tuple[torch.Tensor, dict[str, Any], float]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    settings = GridSettings(**kw)
    t0 = time.perf_counter()
    g = active_group(distributed, group)
    start, stop = shard_bounds(len(coefs), g)
    if g is not None:
        import torch.distributed as dist

        # Decided from the grid size alone, so every rank raises (none waits in a collective).
        if len(coefs) < dist.get_world_size(g):
            raise ValueError(
                f"the grid has {len(coefs)} points, fewer than the "
                f"{dist.get_world_size(g)} ranks to share it"
            )
    local, info = evaluate_points(
        model, loss_fn, data, targets, directions, coefs[start:stop], metrics=metrics,
        settings=settings,
    )  # fmt: skip
    info["local_points"] = stop - start
    full = gather_points(local, start, len(coefs), g)
    # The only host copy: once, at the end.
    return full.cpu(), info, time.perf_counter() - t0


def _metadata(model, info, seconds, g_kinds, **extra) -> dict[str, Any]:
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    return {
        "directions": g_kinds,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "num_samples": int(info["samples"]),
        "num_batches": int(info["batches"]),
        "method": info["method"],
        "first_layer": bool(info["first_layer"]),
        "chunk_size": info["chunk_size"],
        "local_points": int(info["local_points"]),
        "world_size": dist.get_world_size() if ready else 1,
        "seconds": round(seconds, 6),
        **extra,
    }


def line(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | BatchLoss | None,
    data: Any,
    targets: Any = None,
    *,
    direction: Mapping[str, torch.Tensor],
    alpha_range: Sequence[float] = (-1.0, 1.0),
    num_points: int = 51,
    metrics: Sequence[str | Metric] | Mapping[str, Metric] = ("loss",),
    max_batches: int | None = None,
    train: bool = False,
    method: str = "auto",
    first_layer: bool | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    distributed: bool | None = None,
    group: Any = None,
) -> Landscape:
    """Metrics at ``theta + alpha * direction`` for ``alpha`` on a regular grid.

    The model is evaluated in eval mode (dropout off, BatchNorm running statistics read,
    never updated) unless ``train=True``, and everything about it is restored
    bit-for-bit afterwards, also when ``loss_fn`` raises or on Ctrl-C. The loss should be
    the batch mean; over a DataLoader the batch values are averaged weighted by
    :meth:`~optiscope.batch_loss.BatchLoss.size` (the mean over all samples).

    Args:
        model: The network.
        loss_fn: ``loss_fn(output, target) -> scalar`` (the guide's way), a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``); see :mod:`optiscope.batch_loss`.
        data: Input tensor (with ``targets``) or a DataLoader / iterable of batches in any
            layout the BatchLoss understands (``(x, y)``, ``(x1, ..., xn, y)``, dicts).
        targets: Labels for tensor ``data``; None with a DataLoader.
        direction: ``{param_name: tensor}`` (missing names are zero), e.g. from
            :func:`random_direction` or ``curvature.hessian_directions``.
        alpha_range: ``(low, high)`` of the grid.
        num_points: Grid size (>= 2).
        metrics: ``"loss"``, ``"accuracy"`` (``optiscope._internal.accuracy``'s rules;
            a ValueError where it cannot be computed: regression, a FunctionLoss),
            callables ``(outputs, targets)``, or a dict.
        max_batches: Use only the first batches of a DataLoader.
        train: Evaluate in train mode instead (statistics restored afterwards).
        method: ``"auto"`` (a fixed rule on model, batch and device, never timing: the
            same inputs give the same bits), ``"vmap"`` or ``"walk"``; see
            ``landscape/_choice.py``.
        first_layer: First-layer algebra (valid for an ``nn.Sequential`` starting with
            Linear/Conv2d called as ``model(x)``): None lets the rule decide; True
            requires it; False never.
        chunk_size: Grid points per batched call (None: sized to memory).
        device: Move batches here (default: the parameters' device).
        progress: tqdm bar: None shows it after one second, True always, False never.
        distributed: Shard the grid across ranks (None: when torch.distributed is up).
        group: Process group for sharding (default: the world).

    Returns:
        A 1-D :class:`Landscape`.

    Raises:
        TypeError: Arguments of the wrong kind (a model that is not a module, a
            ``loss_fn`` that is none of the above, a batch the BatchLoss cannot read).
        ValueError: Mismatched direction, ``num_points < 2``, bad range, empty data, a
            non-scalar loss, a metric that cannot be computed.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> m = nn.Linear(2, 1)
        >>> X, y = torch.randn(8, 2), torch.randn(8, 1)
        >>> ls = line(m, nn.MSELoss(), X, y, direction={"bias": torch.ones(1)}, num_points=3)
        >>> ls.loss.shape
        (3,)
    """
    alphas = grid_coordinates(alpha_range, num_points)
    full, info, secs = _run(
        model,
        loss_fn,
        data,
        targets,
        [direction],
        alphas[:, None],
        metrics=metrics,
        distributed=distributed,
        group=group,
        max_batches=max_batches,
        train=train,
        method=method,
        first_layer=first_layer,
        chunk_size=chunk_size,
        device=device,
        progress=progress,
    )
    names = _metric_names(metrics)
    values = {m: full[:, k].numpy() for k, m in enumerate(names)}
    meta = _metadata(model, info, secs, [_describe(direction)], train=train)
    return Landscape(alphas, None, values, meta)


def plane(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | BatchLoss | None,
    data: Any,
    targets: Any = None,
    *,
    d1: Mapping[str, torch.Tensor],
    d2: Mapping[str, torch.Tensor],
    alpha_range: Sequence[float] = (-1.0, 1.0),
    beta_range: Sequence[float] | None = None,
    num_points: int | tuple[int, int] = 51,
    metrics: Sequence[str | Metric] | Mapping[str, Metric] = ("loss",),
    max_batches: int | None = None,
    train: bool = False,
    method: str = "auto",
    first_layer: bool | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    distributed: bool | None = None,
    group: Any = None,
) -> Landscape:
    """Metrics at ``theta + alpha * d1 + beta * d2`` on a regular 2-D grid.

    ``values[m][i, j]`` is the value at ``(alphas[i], betas[j])`` (``indexing="ij"``);
    the plots put ``d1`` on the x axis. Mode, restore, batching and sharding are as in
    :func:`line`.

    Args:
        model: The network.
        loss_fn: ``loss_fn(outputs, targets) -> scalar tensor``.
        data: Input tensor (with ``targets``) or a DataLoader.
        targets: Labels for tensor ``data``.
        d1: First direction (x axis).
        d2: Second direction (y axis).
        alpha_range: Range along ``d1``.
        beta_range: Range along ``d2`` (default: ``alpha_range``).
        num_points: Points per axis, or ``(n1, n2)``.
        metrics: As in :func:`line`.
        max_batches: As in :func:`line`.
        train: As in :func:`line`.
        method: As in :func:`line`.
        first_layer: As in :func:`line`.
        chunk_size: As in :func:`line`.
        device: As in :func:`line`.
        progress: As in :func:`line`.
        distributed: As in :func:`line`.
        group: As in :func:`line`.

    Returns:
        A 2-D :class:`Landscape`.

    Raises:
        ValueError: As in :func:`line`.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> X, y = torch.randn(8, 2), torch.randn(8, 1)
        >>> d1, d2 = {"bias": torch.ones(1)}, {"weight": torch.ones(1, 2)}
        >>> plane(m, nn.MSELoss(), X, y, d1=d1, d2=d2, num_points=(3, 4)).loss.shape
        (3, 4)
    """
    n1, n2 = (num_points, num_points) if not isinstance(num_points, tuple) else num_points
    alphas = grid_coordinates(alpha_range, n1)
    betas = grid_coordinates(alpha_range if beta_range is None else beta_range, n2, "beta_range")
    aa, bb = np.meshgrid(alphas, betas, indexing="ij")
    coefs = np.stack([aa.ravel(), bb.ravel()], axis=1)
    full, info, secs = _run(
        model,
        loss_fn,
        data,
        targets,
        [d1, d2],
        coefs,
        metrics=metrics,
        distributed=distributed,
        group=group,
        max_batches=max_batches,
        train=train,
        method=method,
        first_layer=first_layer,
        chunk_size=chunk_size,
        device=device,
        progress=progress,
    )
    names = _metric_names(metrics)
    values = {m: full[:, k].numpy().reshape(len(alphas), len(betas)) for k, m in enumerate(names)}
    meta = _metadata(model, info, secs, [_describe(d1), _describe(d2)], train=train)
    return Landscape(alphas, betas, values, meta)


def _metric_names(metrics) -> list[str]:
    return [m.name for m in resolve_metrics(metrics)]
