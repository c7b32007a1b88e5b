"""Exact Hessians of small models: the reference every curvature test checks against."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


@dataclass
class Problem:
    model: nn.Module
    loss_fn: object
    X: torch.Tensor
    y: torch.Tensor
    H: torch.Tensor  # exact Hessian over the flattened trainable parameters, float64
    names: list[str]
    sizes: list[int]

    @property
    def eigvals(self) -> torch.Tensor:
        return torch.linalg.eigvalsh(self.H)


def exact_hessian(model: nn.Module, loss_fn, X, y, names=None) -> torch.Tensor:
    """``torch.autograd.functional.hessian`` over the flattened parameters, in eval mode."""
    params = dict(model.named_parameters())
    names = names or [n for n, p in params.items() if p.requires_grad]
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names]).double()
    model64 = _double_copy(model)

    def loss(v: torch.Tensor) -> torch.Tensor:
        state, i = {}, 0
        for n, s in zip(names, shapes):
            state[n] = v[i : i + s.numel()].reshape(s)
            i += s.numel()
        return loss_fn(functional_call(model64, state, (_double(X),)), _double(y))

    return torch.autograd.functional.hessian(loss, flat)


def _double(t: torch.Tensor) -> torch.Tensor:
    return t.double() if t.is_floating_point() else t


def _double_copy(model: nn.Module) -> nn.Module:
    import copy

    m = copy.deepcopy(model).double()
    m.eval()
    return m


def make_problem(model: nn.Module, loss_fn, X, y) -> Problem:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sizes = [dict(model.named_parameters())[n].numel() for n in names]
    return Problem(model, loss_fn, X, y, exact_hessian(model, loss_fn, X, y), names, sizes)


def flatten(d: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([d[n].reshape(-1) for n in names])


def state_of(model: nn.Module) -> dict:
    """Everything ``preserved`` promises to restore, as comparable values."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "modes": [m.training for m in model.modules()],
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["flags"] == b["flags"]
    assert a["modes"] == b["modes"]
    for key in ("params", "buffers"):
        assert a[key].keys() == b[key].keys()
        for n in a[key]:
            assert torch.equal(a[key][n], b[key][n]), (key, n)
    for n, g in a["grads"].items():
        h = b["grads"][n]
        assert (g is None) == (h is None), n
        if g is not None:
            assert torch.equal(g, h), n
