"""How a grid is evaluated, decided by a fixed rule from the model, the batch and the device.

Nothing is timed: the same inputs give the same method, chunk size and first-layer choice
on every run, whatever the machine's load, so the same bits (vmap and the walk differ in
the last bits, about 1e-7 relative). One plain forward on the first batch, at the
unperturbed weights and in eval mode, tells the rule what it needs: the elements of every
module output (memory per point), the matmul/conv FLOPs and the number of layer calls.

The rule ``method="auto"`` applies (measured on one CPU thread with
``python benchmarks/bench_landscape.py --rule``, which prints the sweep):

* **vmap** when the model is a plain ``nn.Sequential`` (nested Sequentials allowed) of
  standard layers (:data:`VMAP_LAYERS`), without hooks, not in train mode, at least
  :data:`_MIN_CHUNK` points fit the memory budget, and a layer call does little work: at
  most 1 MFLOP on average on the CPU. vmap saves the per-call overhead of the walk; in
  the sweep (2-10-1 net, digits MLP and CNN at 16 to 1,024 samples) it was faster up to
  0.93 MFLOP per call (1.15x-6.7x) and the walk from 1.2 MFLOP on (1.4x-2.4x). On CUDA
  the limit is 100 MFLOP per call, an estimate from launch costs (no GPU was measured).
  Anything else, a custom ``forward`` included (it may hold ``.item()``, data-dependent
  control flow or ops without batching rules, such as ``aten::lstm``), takes the walk.
* **first-layer algebra** whenever it is valid with vmap (it replaces vmap's slowest
  case, a shared input with batched weights); in the walk when the first layer's fan-in
  is at least ``16 (k + 1)`` for ``k`` directions: for a plane, fan-in 64 and above won
  1.1x-1.6x, 27 and below lost (0.85x-1.0x); 32 was a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from optiscope._internal.checks import check_bool, check_choice, check_optional_int
from optiscope.batch_loss import BatchLoss

__all__ = ["METHODS", "Plan", "Probe", "GridSettings", "VMAP_LAYERS", "probe", "plan"]

METHODS = ("auto", "vmap", "walk")

# Memory a vmap chunk may use on the CPU: chunks that spill out of the caches run slower
# (measured on the guide's 2-10-1 network: 512 points per chunk beat both 128 and 2,601).
# On CUDA an eighth of the device's total memory (total, not free: free memory changes
# from run to run, and the chunk must not).
_CPU_BUDGET = 8 * 2**20
_MAX_CHUNK = 4096
_MIN_CHUNK = 4
_CPU_FLOPS_PER_CALL = 1_000_000
_CUDA_FLOPS_PER_CALL = 100_000_000
_FL_FAN_IN_PER_TERM = 16

VMAP_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Unflatten, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Softmax, nn.LogSoftmax,
)  # fmt: skip


@dataclass(frozen=True)
class GridSettings:
    """How a grid is evaluated (the keyword arguments of ``line`` and ``plane``).

    Attributes:
        method: ``"auto"`` (the fixed rule above), ``"vmap"`` or ``"walk"``.
        first_layer: First-layer algebra: None (the rule), True (required), False (never).
        chunk_size: Grid points per vmap call (None: sized to memory).
        max_batches: Use only the first batches of a DataLoader.
        device: Move batches here (default: the parameters' device).
        train: Evaluate in train mode (walk only; statistics restored afterwards).
        progress: tqdm bar: None shows it after one second, True always, False never.

    Raises:
        TypeError: An argument of the wrong kind.
        ValueError: An unknown method, a count below 1, or ``method="vmap"`` with
            ``train=True``.

    Example:
        >>> GridSettings(method="walk", chunk_size=8).first_layer is None
        True
        >>> GridSettings(method="fast")
        Traceback (most recent call last):
            ...
        ValueError: method must be one of ('auto', 'vmap', 'walk'), got 'fast'
    """

    method: str = "auto"
    first_layer: bool | None = None
    chunk_size: int | None = None
    max_batches: int | None = None
    device: torch.device | str | None = None
    train: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        for name in ("first_layer", "progress"):
            if getattr(self, name) is not None:
                check_bool(name, getattr(self, name))
        check_optional_int("chunk_size", self.chunk_size, low=1)
        check_optional_int("max_batches", self.max_batches, low=1)
        check_bool("train", self.train)
        if self.train and self.method == "vmap":
            raise ValueError("method='vmap' cannot evaluate in train mode; use 'walk' or 'auto'")


@dataclass(frozen=True)
class Probe:
    """What one plain forward on the first batch showed."""

    activation_elems: int  # elements of all module outputs
    flops: int  # matmul and conv FLOPs (2 per multiply-add), plus one per output element
    calls: int  # leaf-module calls
    output: Any
    target: Any


@dataclass(frozen=True)
class Plan:
    """How every batch is evaluated: ``"vmap"`` or ``"walk"``, algebra, chunk size."""

    method: str
    first_layer: bool
    chunk: int


def _layer_flops(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Linear):
        return 2 * m.in_features * out.numel()
    if isinstance(m, nn.modules.conv._ConvNd):
        return 2 * fan_in(m) * out.numel()
    return out.numel()


def fan_in(layer: nn.Module) -> int:
    """Multiply-adds per output element of a Linear or conv layer."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return layer.in_channels // layer.groups * math.prod(layer.kernel_size)


def probe(model: nn.Module, bl: BatchLoss, batch: Any) -> Probe:
    """One forward at the current weights, counting outputs, FLOPs and layer calls."""
    counts = {"elems": 0, "flops": 0, "calls": 0}

    def hook(m: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            counts["elems"] += out.numel()
            if not any(True for _ in m.children()):
                counts["calls"] += 1
                counts["flops"] += _layer_flops(m, out)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        ev = bl.evaluate(model, batch)
    finally:
        for h in handles:
            h.remove()
    return Probe(counts["elems"], counts["flops"], counts["calls"], ev.output, ev.target)


def _plain_sequential(model: nn.Module) -> bool:
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        if type(m) is not nn.Sequential and type(m) not in VMAP_LAYERS:
            return False
    return True


def _chunk(pr: Probe, perturbed: int, device: torch.device) -> int:
    """Grid points per vmap call: the memory budget over an estimate of one point's."""
    per_point = 4 * (2 * pr.activation_elems + 2 * perturbed)
    if device.type == "cuda":
        budget = torch.cuda.get_device_properties(device).total_memory // 8
    else:
        budget = _CPU_BUDGET
    return int(max(1, min(_MAX_CHUNK, budget // max(per_point, 1))))


def _auto_method(model: nn.Module, pr: Probe, chunk: int, device: torch.device) -> str:
    limit = _CUDA_FLOPS_PER_CALL if device.type == "cuda" else _CPU_FLOPS_PER_CALL
    small = pr.flops <= limit * max(pr.calls, 1)
    return "vmap" if small and chunk >= _MIN_CHUNK and _plain_sequential(model) else "walk"


def plan(
    model: nn.Module,
    pr: Probe,
    settings: GridSettings,
    *,
    first: nn.Module | None,
    perturbed: int,
    k: int,
    device: torch.device,
) -> Plan:
    """The fixed rule of this module's notes.

    Args:
        model: The network.
        pr: The probe forward's counts.
        settings: What the caller asked for (``method``, ``first_layer``, ...).
        first: The first affine layer when first-layer algebra is valid, else None.
        perturbed: Elements of the perturbed parameters.
        k: Number of directions.
        device: Where the grid is evaluated.

    Raises:
        ValueError: ``first_layer=True`` where the algebra is not valid.
    """
    memory_chunk = _chunk(pr, perturbed, device)
    method, first_layer = settings.method, settings.first_layer
    if method == "auto":
        method = "walk" if settings.train else _auto_method(model, pr, memory_chunk, device)
    if first_layer and first is None:
        raise ValueError(
            "first_layer=True needs an nn.Sequential starting with Linear or Conv2d, "
            "without hooks, and a loss_fn(output, target) on batches with one input tensor"
        )
    if first_layer is None:
        first_layer = first is not None and (
            method == "vmap" or fan_in(first) >= _FL_FAN_IN_PER_TERM * (k + 1)
        )
    return Plan(method, bool(first_layer), settings.chunk_size or memory_chunk)
