"""Bit-exact snapshots of a model (and optionally optimizer and RNG) that are always restored.

Everything in optiscope that perturbs a model (landscape, curvature, lr_find) wraps its
work in :func:`preserved`, so parameters, buffers, gradients, ``requires_grad`` flags,
train/eval modes, optimizer state and RNG states come back bit-for-bit, also when the work
raises or is interrupted with Ctrl-C.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class RNGState:
    """The states of every random number generator a training step may draw from."""

    python: Any
    numpy: Any
    torch: torch.Tensor
    cuda: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def capture(cls) -> RNGState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        # The legacy global numpy state is what user code draws from, so it is what we keep.
        state = np.random.get_state()  # noqa: NPY002
        return cls(random.getstate(), state, torch.get_rng_state(), cuda)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)  # noqa: NPY002
        torch.set_rng_state(self.torch)
        if self.cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda)

    def state_dict(self) -> dict[str, Any]:
        """The states as plain data that ``torch.load(weights_only=True)`` can read back.

        Example:
            >>> import torch
            >>> saved = RNGState.capture().state_dict()
            >>> a = torch.rand(2)
            >>> RNGState.from_state_dict(saved).restore()
            >>> bool(torch.equal(a, torch.rand(2)))
            True
        """
        version, internal, gauss = self.python
        _, keys, pos, has_gauss, cached = self.numpy
        return {
            # Python's state is a tuple of ints; a list round-trips through weights_only.
            "python": [version, list(internal), gauss],
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(cached),
            },
            "torch": self.torch,
            "cuda": list(self.cuda),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> RNGState:
        """The inverse of :meth:`state_dict`."""
        version, internal, gauss = state["python"]
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        numpy_state = ("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"])
        return cls((version, tuple(internal), gauss), numpy_state, state["torch"], state["cuda"])


@dataclass
class ModelSnapshot:
    """Copies of everything about a module that evaluating or training it can change."""

    params: list[tuple[nn.Parameter, torch.Tensor, bool, torch.Tensor | None]]
    buffers: list[tuple[nn.Module, str, torch.Tensor | None]]
    modes: list[tuple[nn.Module, bool]]
    optimizer: tuple[torch.optim.Optimizer, dict] | None = None
    rng: RNGState | None = None

    @classmethod
    def capture(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        rng: bool = False,
    ) -> ModelSnapshot:
        params = [
            (
                p,
                p.detach().clone(),
                p.requires_grad,
                None if p.grad is None else p.grad.detach().clone(),
            )
            for p in model.parameters()
        ]
        # Buffers are stored by (owner, name) so a buffer that was reassigned, not
        # modified in place (BatchNorm's num_batches_tracked can be), is put back too.
        buffers = [
            (m, name, None if b is None else b.detach().clone())
            for m in model.modules()
            for name, b in m._buffers.items()
        ]
        modes = [(m, m.training) for m in model.modules()]
        opt = None if optimizer is None else (optimizer, copy.deepcopy(optimizer.state_dict()))
        return cls(params, buffers, modes, opt, RNGState.capture() if rng else None)

    def restore(self) -> None:
        with torch.no_grad():
            for p, value, requires_grad, grad in self.params:
                _copy_into(p, value)
                p.requires_grad_(requires_grad)
                if grad is None:
                    p.grad = None
                elif p.grad is not None and p.grad.shape == grad.shape:
                    p.grad.copy_(grad)
                else:
                    p.grad = grad.clone()
            for module, name, value in self.buffers:
                current = module._buffers.get(name)
                if value is None or current is None or current.shape != value.shape:
                    module._buffers[name] = None if value is None else value.clone()
                else:
                    _copy_into(current, value)
        for module, training in self.modes:
            module.training = training
        if self.optimizer is not None:
            optimizer, state = self.optimizer
            # load_state_dict copies, so the snapshot stays usable for a second restore.
            optimizer.load_state_dict(copy.deepcopy(state))
        if self.rng is not None:
            self.rng.restore()


def _copy_into(target: torch.Tensor, value: torch.Tensor) -> None:
    # Copy in place when possible so storage identity survives (DDP buckets, views held
    # by optimizers); fall back to rebinding .data if someone changed shape or dtype.
    if target.shape == value.shape and target.dtype == value.dtype:
        target.data.copy_(value)
    else:
        target.data = value.clone()


@contextmanager
def preserved(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    rng: bool = False,
) -> Iterator[ModelSnapshot]:
    """Restore ``model`` (and ``optimizer``, RNG states) bit-for-bit on leaving the block.

    Args:
        model: The module whose parameters, buffers, grads, flags and modes to keep.
        optimizer: Also restore this optimizer's state dict (lr, momentum buffers, ...).
        rng: Also restore the Python, numpy, torch and CUDA RNG states.

    Yields:
        The snapshot, for callers that need to reset to it mid-way (``snap.restore()``).

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 1)
        >>> w = m.weight.detach().clone()
        >>> with preserved(m):
        ...     _ = m.weight.data.add_(1.0)
        >>> bool(torch.equal(m.weight, w))
        True
    """
    snapshot = ModelSnapshot.capture(model, optimizer, rng)
    try:
        yield snapshot
    finally:
        snapshot.restore()
