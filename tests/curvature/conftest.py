"""Fixtures: small problems with exact Hessians."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ._reference import Problem, make_problem


@pytest.fixture
def mlp_2_10_1() -> Problem:
    """A 2-10-1 tanh MLP on a regression problem: 41 parameters, an indefinite Hessian."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 10), nn.Tanh(), nn.Linear(10, 1))
    X = torch.randn(64, 2, generator=g)
    y = torch.sin(X[:, :1] * 2) + 0.1 * torch.randn(64, 1, generator=g)
    return make_problem(model, F.mse_loss, X, y)


@pytest.fixture
def classifier() -> Problem:
    """A 4-8-8-3 tanh classifier with cross-entropy (107 parameters), trained a little."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    X = torch.randn(90, 4, generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return make_problem(model, F.cross_entropy, X, y)
