"""Small models and data shared by the landscape tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optiscope.data import digits_tensors


@pytest.fixture(scope="session")
def digits():
    X, y = digits_tensors()
    return X[:240], y[:240]


def mlp_with_dropout(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 24),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(24, 12),
        nn.ReLU(),
        nn.Linear(12, 10),
    )


def cnn_with_bn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 10),
    )
    # Non-trivial running statistics, so reading them (not batch stats) matters.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def brute_force(model, loss_fn, X, y, dirs, coefs, train=False):
    """The obvious loop: set the weights, evaluate, put them back."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    params = dict(model.named_parameters())
    out = []
    model.train(train)
    with torch.no_grad():
        for c in coefs:
            for name, p in params.items():
                new = state[name].clone()
                for ci, d in zip(c, dirs):
                    if name in d:
                        new = new + float(ci) * d[name]
                p.copy_(new)
            out.append(float(loss_fn(model(X), y)))
    model.load_state_dict(state)
    model.train(was_training)
    return np.array(out)


def state_of(model: nn.Module) -> dict:
    """Everything restore promises to keep: values, flags, grads, modes."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    assert a["requires_grad"] == b["requires_grad"]
    assert a["modes"] == b["modes"]
    for g1, g2 in zip(a["grads"], b["grads"]):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            assert torch.equal(g1, g2)
