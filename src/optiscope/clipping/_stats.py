"""Gradient statistics that stay on the device: per-parameter norms and a tracker over steps."""

from __future__ import annotations

import math

import torch
from torch import nn

from optiscope._internal.checks import check_norm_type
from optiscope.clipping._functional import per_tensor_norms

__all__ = ["GradientTracker", "grad_norms"]


def _check_module(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


@torch.no_grad()
def grad_norms(model: nn.Module, norm_type: float = 2.0) -> dict[str, torch.Tensor]:
    """The gradient norm of every parameter that has a gradient, on the device.

    One foreach norm kernel per device for all parameters; fp16/bf16 gradients are reduced
    in float32. Nothing is copied to the host.

    Args:
        model: The module whose ``named_parameters()`` are measured.
        norm_type: Order ``p`` of the norm, in ``(0, inf]``.

    Returns:
        ``{parameter name: 0-d tensor}``, in ``named_parameters()`` order; parameters
        without a gradient are left out.

    Raises:
        TypeError: ``model`` is not a Module.
        ValueError: ``norm_type`` out of range.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> model(torch.ones(1, 2)).sum().backward()
        >>> {k: round(float(v), 3) for k, v in grad_norms(model).items()}
        {'weight': 1.414, 'bias': 1.0}
    """
    model = _check_module(model)
    p = check_norm_type(norm_type)
    named = [(n, q.grad) for n, q in model.named_parameters() if q.grad is not None]
    if not named:
        return {}
    norms = per_tensor_norms([g for _, g in named], p)
    return dict(zip([n for n, _ in named], norms))


def _layer_of(name: str) -> str:
    # "encoder.0.weight" belongs to module "encoder.0"; a top-level parameter is its own layer.
    return name.rsplit(".", 1)[0] if "." in name else name


class GradientTracker:
    """Record global and per-layer gradient norms over steps, on the device.

    Call :meth:`record` after ``backward`` (before clipping to see the raw gradients, or
    after it to see what the optimizer gets). Each call costs one foreach norm kernel and
    a few small reductions and never synchronises; :meth:`history` copies everything to the
    host in one transfer, when you ask. A layer is the module owning the parameters
    (``"features.0"`` for ``"features.0.weight"`` and ``"features.0.bias"``).

    Args:
        model: The module to watch.
        norm_type: Order ``p`` of the norms, in ``(0, inf]``.

    Raises:
        TypeError: ``model`` is not a Module.
        ValueError: ``norm_type`` out of range, or the model has no parameters.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        >>> tracker = GradientTracker(model)
        >>> for _ in range(3):
        ...     model.zero_grad(); model(torch.randn(5, 3)).sum().backward(); _ = tracker.record()
        >>> h = tracker.history()
        >>> len(h["global"]), sorted(h["layers"])
        (3, ['0', '1'])
    """

    def __init__(self, model: nn.Module, norm_type: float = 2.0) -> None:
        self.model = _check_module(model)
        self.norm_type = check_norm_type(norm_type)
        self._params = [(n, p) for n, p in model.named_parameters()]
        if not self._params:
            raise ValueError("model has no parameters to track")
        self.layers: list[str] = list(dict.fromkeys(_layer_of(n) for n, _ in self._params))
        index = {name: i for i, name in enumerate(self.layers)}
        self._layer_index = [index[_layer_of(n)] for n, _ in self._params]
        self._index_cache: dict[tuple, torch.Tensor] = {}
        self._pending: list[torch.Tensor] = []

    def __len__(self) -> int:
        """Number of recorded steps."""
        return len(self._pending)

    def _index(self, present: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (present, device)
        if key not in self._index_cache:
            idx = [self._layer_index[i] for i in present]
            self._index_cache[key] = torch.tensor(idx, device=device)
        return self._index_cache[key]

    @torch.no_grad()
    def record(self) -> torch.Tensor:
        """Measure the current gradients and store the norms on the device.

        Returns:
            The global gradient norm of this step (0-d tensor, 0 when no gradient exists).
        """
        present = tuple(i for i, (_, p) in enumerate(self._params) if p.grad is not None)
        if not present:
            row = torch.zeros(1 + len(self.layers))
            self._pending.append(row)
            return row[0]
        grads = [self._params[i][1].grad for i in present]
        device = grads[0].device
        norms = torch.stack([n.to(device) for n in per_tensor_norms(grads, self.norm_type)])
        layers = torch.zeros(len(self.layers), dtype=norms.dtype, device=device)
        index = self._index(present, device)
        p = self.norm_type
        if math.isinf(p):
            layers.scatter_reduce_(0, index, norms, reduce="amax")
        else:
            layers.index_add_(0, index, norms.pow(p)).pow_(1.0 / p)
        total = torch.linalg.vector_norm(norms, p)
        self._pending.append(torch.cat([total.view(1), layers]))
        return total

    def history(self) -> dict[str, list[float] | dict[str, list[float]]]:
        """All recorded norms on the host (one device-to-host copy).

        Returns:
            ``{"global": [norm per step], "layers": {layer: [norm per step]}}``.
        """
        if not self._pending:
            return {"global": [], "layers": {name: [] for name in self.layers}}
        table = torch.stack(self._pending).cpu().double().tolist()
        columns = list(zip(*table))
        return {
            "global": list(columns[0]),
            "layers": {name: list(columns[i + 1]) for i, name in enumerate(self.layers)},
        }

    def summary(self) -> dict[str, dict[str, float]]:
        """Per-layer health over the recorded steps: mean, max, min and last norm.

        A layer whose mean norm is orders of magnitude below the others is not learning
        (vanishing gradients); one with a max far above its mean sees spikes.

        Returns:
            ``{layer: {"mean": ..., "max": ..., "min": ..., "last": ...}}`` plus the same
            for ``"global"``.

        Raises:
            ValueError: Nothing was recorded yet.
        """
        if not self._pending:
            raise ValueError("nothing recorded yet: call record() after backward()")
        table = torch.stack(self._pending).cpu().double()
        stats = torch.stack(
            [table.mean(0), table.max(0).values, table.min(0).values, table[-1]]
        ).tolist()
        names = ["global", *self.layers]
        keys = ("mean", "max", "min", "last")
        return {n: {k: stats[r][c] for r, k in enumerate(keys)} for c, n in enumerate(names)}

    def reset(self) -> None:
        """Forget the recorded steps."""
        self._pending.clear()
