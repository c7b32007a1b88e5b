"""Small models, data and a plain hand-written loop shared by the instruments tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optiscope.instruments import Instruments


def mlp(seed: int = 0, dims: tuple[int, ...] = (5, 6, 3), act: type = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def data(n: int = 12, features: int = 5, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def run_loop(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    inst: Instruments | None,
    *,
    accum: int = 1,
    before_step: bool = True,
    loss_fn: Callable[..., torch.Tensor] = F.cross_entropy,
    hook: Callable[[int], Any] | None = None,
) -> None:
    """One optimizer step per ``accum`` consecutive batches (loss divided by ``accum``)."""
    for start in range(0, len(batches), accum):
        for x, y in batches[start : start + accum]:
            loss = loss_fn(model(x), y)
            (loss / accum).backward()
            if inst is not None:
                inst.after_backward(loss, batch_size=len(x))
        if inst is not None and before_step:
            inst.before_step()
        opt.step()
        if inst is not None:
            inst.after_step()
        opt.zero_grad()
        if hook is not None:
            hook(start // accum + 1)


def exact_hessian(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor):
    """The loss Hessian of a float64 copy (eval mode) by torch.autograd.functional.hessian."""
    import copy

    ref = copy.deepcopy(model).double().eval()
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    shapes = [p.shape for _, p in ref.named_parameters() if p.requires_grad]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in ref.named_parameters()])
    sizes = [s.numel() for s in shapes]

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = flat.split(sizes)
        state = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        out = torch.func.functional_call(ref, state, (X.double(),))
        return loss_fn(out, y)

    return torch.autograd.functional.hessian(f, flat0)
