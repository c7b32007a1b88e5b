"""``package.module:factory`` entry points for configs: each zoo member's model and loaders.

A run config names a member by its registry name::

    [model]
    name = "tests.zoo.factories:model"
    member = "hf_style"

    [data]
    name = "tests.zoo.factories:loaders"
    member = "hf_style"

    [train]
    loss = "model"          # what loss_name("hf_style") gives

so ``optiscope train`` builds exactly what the other zoo tests use (the repository root
must be on ``PYTHONPATH`` for ``tests.zoo`` to import).
"""

from __future__ import annotations

from torch import nn
from torch.utils.data import DataLoader, Subset

from tests.zoo._registry import ZOO, ZooMember, next_token_loss

__all__ = ["model", "loaders", "loss_name"]

_BY_NAME = {m.name: m for m in ZOO}


def _member(member: str) -> ZooMember:
    if member not in _BY_NAME:
        raise ValueError(f"member must be one of {', '.join(_BY_NAME)}, got {member!r}")
    return _BY_NAME[member]


def model(member: str) -> nn.Module:
    """A new model of ``member`` (the run seeds torch before calling this)."""
    return _member(member).build()


def loaders(
    member: str, batch_size: int = 16, val_fraction: float = 0.25, seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """``(train, val)`` loaders over ``member``'s data set, in its own batch layout."""
    data = _member(member).dataset()
    n_val = max(1, round(len(data) * val_fraction))
    train = Subset(data, range(n_val, len(data)))
    val = Subset(data, range(n_val))
    import torch

    g = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=g),
        DataLoader(val, batch_size=batch_size),
    )


def loss_name(member: str) -> str:
    """The ``[train] loss`` value that gives ``member``'s ``loss_fn``."""
    loss_fn = _member(member).loss_fn
    if loss_fn is None:
        return "model"
    if loss_fn is next_token_loss:
        return "tests.zoo._registry:next_token_loss"
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        return "cross_entropy"
    if isinstance(loss_fn, nn.MSELoss):
        return "mse"
    return f"torch.nn:{type(loss_fn).__name__}"
