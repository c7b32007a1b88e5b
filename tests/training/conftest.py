"""Small, fast set-ups for the trainer tests: a digits subset and a dropout MLP."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from optiscope import digits_mlp, digits_tensors


@pytest.fixture(scope="session")
def digits_small() -> tuple[torch.Tensor, torch.Tensor]:
    X, y = digits_tensors()
    return X[:384], y[:384]


@pytest.fixture
def make_loaders(digits_small):
    """``make_loaders(batch_size, shuffle=True, n=None)`` -> (train, val) DataLoaders."""

    def make(batch_size: int = 32, shuffle: bool = True, n: int | None = None):
        X, y = digits_small
        if n is not None:
            X, y = X[:n], y[:n]
        train = DataLoader(TensorDataset(X[64:], y[64:]), batch_size=batch_size, shuffle=shuffle)
        val = DataLoader(TensorDataset(X[:64], y[:64]), batch_size=64)
        return train, val

    return make


@pytest.fixture
def make_model():
    """``make_model(seed, dropout=0.1)`` -> a small digits MLP with fixed initial weights."""

    def make(seed: int = 0, dropout: float = 0.1):
        torch.manual_seed(seed)
        return digits_mlp(hidden=(32,), dropout=dropout)

    return make


def weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def same_weights():
    return weights_equal
