"""Random parameter sets with gradients, shared by the clipping tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

SHAPES = st.lists(
    st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple), min_size=1, max_size=6
)


def make_params(
    shapes, seed: int = 0, scale: float = 1.0, dtype=torch.float32, with_none: bool = False
) -> list[torch.nn.Parameter]:
    """Parameters of the given shapes with random weights and gradients.

    With ``with_none`` every third parameter has no gradient, to check they are skipped.
    """
    gen = torch.Generator().manual_seed(seed)
    params = []
    for i, shape in enumerate(shapes):
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).to(dtype))
        if not (with_none and i % 3 == 2):
            p.grad = (torch.randn(shape, generator=gen) * scale).to(dtype)
        params.append(p)
    return params


def clone_params(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    out = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        if p.grad is not None:
            q.grad = p.grad.clone()
        out.append(q)
    return out


def grads(params) -> list[torch.Tensor | None]:
    return [p.grad for p in params]
