"""Small models, data and a plain hand-written loop shared by the instruments tests."""

from __future__ import annotations

import math
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


def one_sample(batch: Any, i: int) -> Any:
    """Sample ``i`` of a tensor, tuple or dict batch, as a batch of one."""
    if isinstance(batch, torch.Tensor):
        return batch[i : i + 1]
    if isinstance(batch, dict):
        return {k: one_sample(v, i) for k, v in batch.items()}
    return type(batch)(one_sample(v, i) for v in batch)


def plain_alpha(model: nn.Module, batch_loss: Any, batch: Any, before: list[torch.Tensor]) -> float:
    """Cockpit's alpha of the step from ``before`` to the model's weights, from per-sample
    gradients of single-sample backward passes (eval mode) and a float64 least-squares
    fit in the distance along the step, as Cockpit writes it."""
    import copy

    import numpy as np

    after = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    d = [(a - b).double() for a, b in zip(after, before)]
    t = math.sqrt(sum((x * x).sum().item() for x in d))
    obs, var = [], []
    for weights in (before, after):
        ref = copy.deepcopy(model).eval()
        params = [p for p in ref.parameters() if p.requires_grad]
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(w)
        losses, slopes = [], []
        for i in range(batch_loss.size(batch)):
            loss = batch_loss(ref, one_sample(batch, i))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            slopes.append(sum((g.double() * x).sum().item()
                              for g, x in zip(grads, d) if g is not None) / t)  # fmt: skip
            losses.append(loss.item())
        obs.append((np.mean(losses), np.mean(slopes)))
        var.append((np.var(losses, ddof=1), np.var(slopes, ddof=1)))
    y = np.array([obs[0][0], obs[1][0], obs[0][1], obs[1][1]])
    w = 1 / np.array([var[0][0], var[1][0], var[0][1], var[1][1]])
    phi = np.array([[1, 0, 0], [1, t, t * t], [0, 1, 0], [0, 1, 2 * t]])
    mu = np.linalg.solve(phi.T @ (w[:, None] * phi), phi.T @ (w * y))
    return -1.0 if mu[2] < 0 else 2 * t / (-mu[1] / mu[2]) - 1
