"""Reproducible per-epoch shuffling, so a resumed run sees the same batches.

A DataLoader with ``shuffle=True`` draws its permutation from a generator whose state
moves on every epoch (or from the global RNG). Resuming in the middle of epoch ``e``
would need that state as it was when epoch ``e`` began. Instead the trainer seeds the
sampler's generator from ``(seed, epoch)`` at the start of every epoch: the permutation
of epoch ``e`` is a pure function of the two, and resuming is "seed, then skip ``k``
batches". A DistributedSampler gets ``set_epoch``, which does the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

__all__ = ["epoch_seed", "seed_epoch_sampler"]

# Mixes seed and epoch into one 63-bit seed (a large odd multiplier spreads nearby seeds).
_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 63) - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of ``epoch`` for a run seeded with ``seed``."""
    return ((seed * _MIX) ^ (epoch * 0x5851F42D4C957F2D + 1)) & _MASK


def seed_epoch_sampler(loader: Iterable, seed: int, epoch: int) -> bool:
    """Make ``loader``'s shuffling for ``epoch`` a function of ``(seed, epoch)``.

    Returns:
        True if the loader's order is reproducible this way (a DataLoader with a
        RandomSampler, DistributedSampler or a sequential sampler); False for other
        iterables, whose order the trainer cannot control.
    """
    if not isinstance(loader, DataLoader):
        return False
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
        return True
    if isinstance(sampler, RandomSampler):
        sampler.generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        return True
    return loader.batch_sampler is None or type(sampler).__name__ == "SequentialSampler"
