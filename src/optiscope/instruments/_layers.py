"""Per-parameter-tensor norms with torch's foreach kernels: gradients, weights, updates.

A measured step costs one ``_foreach_copy_`` (the pre-step snapshot, into buffers
allocated once), one in-place ``_foreach_sub_`` (the update), one more subtraction (the
distance from the initial weights, moved by the update), a foreach norm of the gradients
(when they are read) and one more over the weight, update and distance sets together,
and never copies a value to the host.
Memory: three copies of the weights (initial, snapshot, distance).

The distance is kept incrementally (``D += update``) while every step is measured, and
recomputed exactly (``D = w - w_init``) on the first measured step after an unmeasured
one and every :data:`EXACT_EVERY` steps, so rounding never accumulates far.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EXACT_EVERY", "LayerNorms"]

EXACT_EVERY = 64


class LayerNorms:
    """Gradient, weight, update and distance norms of each trainable parameter tensor.

    Args:
        params: The trainable parameters.
        initial: Keep the initial weights and a distance buffer (for distances).
        buffers: Allocate the snapshot buffers (for updates).
    """

    def __init__(self, params: list[nn.Parameter], initial: bool, buffers: bool) -> None:
        self.params = params
        with torch.no_grad():
            self.buffers = [torch.empty_like(p) for p in params] if buffers else []
            self.initial = [p.detach().clone() for p in params] if initial else []
            self.distance = [torch.zeros_like(p) for p in params] if initial else []
        self.distance_at = 0  # the step whose weights the distance buffers hold

    def grad_norms(self) -> list[torch.Tensor] | None:
        """0-d norms of the current gradients (0 where a parameter has none), read now so
        that ``zero_grad`` or an optimizer writing ``.grad`` cannot change them; None when
        no parameter has a gradient. Call under ``torch.no_grad()``."""
        grads = [p.grad for p in self.params]
        if all(g is not None for g in grads):  # not `None in grads`: that compares tensors
            return list(torch._foreach_norm(grads))
        if all(g is None for g in grads):
            return None
        have = [g for g in grads if g is not None]
        norms = iter(torch._foreach_norm(have))
        zero = torch.zeros((), device=self.params[0].device)
        return [zero if g is None else next(norms) for g in grads]

    def snapshot(self) -> None:
        """Copy the current weights into the snapshot buffers."""
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self.params)

    def norms(self, step: int, weights: bool, update: bool, distance: bool) -> list[torch.Tensor]:
        """0-d norms, in this order: weights, ``w - snapshot``, ``w - w_init`` (each set
        present when asked for), from one foreach kernel. The snapshot buffers are
        overwritten by the update (``w_before - w_after``). Call under ``torch.no_grad()``."""
        tensors: list[torch.Tensor] = []
        if weights:
            tensors += self.params
        if update:
            torch._foreach_sub_(self.buffers, self.params)
            tensors += self.buffers
        if distance:
            self._move_distance(step, update)
            tensors += self.distance
        return list(torch._foreach_norm(tensors)) if tensors else []

    def _move_distance(self, step: int, update: bool) -> None:
        if update and self.distance_at == step - 1 and step % EXACT_EVERY:
            # D_t = D_{t-1} + (w_t - w_{t-1}); the snapshot buffers hold w_{t-1} - w_t.
            torch._foreach_sub_(self.distance, self.buffers)
        else:
            torch._foreach_copy_(self.distance, self.params)
            torch._foreach_sub_(self.distance, self.initial)
        self.distance_at = step

    def state_dict(self) -> dict:
        return {"initial": [t.clone() for t in self.initial],
                "distance": [t.clone() for t in self.distance],
                "distance_at": self.distance_at}  # fmt: skip

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for mine, saved in zip(self.initial + self.distance, state["initial"] + state["distance"]):
            mine.copy_(saved)
        self.distance_at = int(state["distance_at"])
