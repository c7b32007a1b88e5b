"""Per-parameter-tensor norms with torch's foreach kernels: gradients, weights, updates.

One measured step costs a handful of fused passes over the parameters (``_foreach_copy_``
for the pre-step snapshot, ``_foreach_sub_`` for the update and the distance, and
``_foreach_norm`` for each set of norms) and never copies a value to the host: the norms
of all tensors are stacked into one device tensor per quantity.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerNorms"]


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each tensor, stacked into one float32 vector (no host sync)."""
    return torch.stack([n.float() for n in torch._foreach_norm(tensors)])


class LayerNorms:
    """Gradient, weight, update and distance norms of each trainable parameter tensor.

    The pre-step weights are copied into one preallocated buffer set, on measured steps
    only; the update is ``w_after - w_before`` of that step, the distance ``w - w_init``.

    Args:
        named: ``(name, parameter)`` pairs of the trainable parameters.
        snapshots: Keep the buffers for updates and distances (False: gradients only).
    """

    def __init__(self, named: list[tuple[str, nn.Parameter]], snapshots: bool) -> None:
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        with torch.no_grad():
            self.initial = [p.detach().clone() for p in self.params] if snapshots else []
            self.buffers = [torch.empty_like(p) for p in self.params] if snapshots else []

    def grad_norms(self) -> torch.Tensor:
        """Norm of each parameter's gradient (0 for a parameter without one)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if len(grads) == len(self.params):
            return _norms(grads)
        out = torch.zeros(len(self.params), device=self.params[0].device)
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        if have:
            out[have] = _norms(grads).to(out.device)
        return out

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        """Copy the current weights into the buffers; returns their norms."""
        torch._foreach_copy_(self.buffers, [p.detach() for p in self.params])
        return _norms(self.buffers)

    @torch.no_grad()
    def update_norms(self) -> torch.Tensor:
        """Norm of ``w - snapshot`` per tensor (the buffers are overwritten)."""
        torch._foreach_sub_(self.buffers, [p.detach() for p in self.params])
        return _norms(self.buffers)

    @torch.no_grad()
    def distances(self) -> torch.Tensor:
        """Norm of ``w - w_init`` per tensor (the buffers are overwritten)."""
        torch._foreach_copy_(self.buffers, [p.detach() for p in self.params])
        torch._foreach_sub_(self.buffers, self.initial)
        return _norms(self.buffers)
