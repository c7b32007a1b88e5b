"""torch.distributed support: DDP wrapping, sharded loaders, reduced metrics, rank 0 I/O.

The trainer runs unchanged under ``torchrun``: when a process group is initialised it
wraps the model in DistributedDataParallel, shards the training data with a
DistributedSampler of the same batch size, shards the validation data without padding
(rank ``r`` takes samples ``r, r + world, ...``, so no sample is counted twice or
dropped), all-reduces the numbers it logs with the right weights, saves every rank's RNG
state, and lets only rank 0 print, log and write checkpoints. gloo works on CPU, NCCL on
GPUs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "wrap_ddp",
    "distributed_loader",
    "all_reduce_sum",
    "all_reduce_mean",
    "all_gather_object",
    "validation_shard",
]


def is_distributed() -> bool:
    """Whether a torch.distributed process group is initialised (e.g. under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel (``device_ids`` only for accelerators)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cpu":
        return DistributedDataParallel(model)
    return DistributedDataParallel(model, device_ids=[device], output_device=device)


def distributed_loader(loader: DataLoader, seed: int) -> DataLoader:
    """The same loader over this rank's shard: DistributedSampler, same batch size.

    Shuffling is kept if the original loader shuffled (a RandomSampler); the sampler's
    ``seed`` plus ``set_epoch`` make every epoch's shards reproducible.

    Raises:
        TypeError: ``loader`` is not a DataLoader with a batch size (a custom
            ``batch_sampler`` cannot be sharded automatically).
    """
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError(
            "under torch.distributed, train_loader must be a DataLoader with batch_size "
            f"(got {type(loader).__name__}); shard custom loaders yourself"
        )
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    sampler = DistributedSampler(
        loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler), seed=seed
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
    )


def validation_shard(loader: Any) -> tuple[Any, bool]:
    """This rank's part of a validation loader, and whether it is a part (to all-reduce).

    Rank ``r`` of ``w`` gets the samples ``r, r + w, r + 2w, ...`` in order, in batches of
    the loader's size: together the ranks see every sample exactly once, also when the
    data set size is not divisible by ``w`` (DistributedSampler would pad with repeats).
    A loader that is not a map-style DataLoader with a batch size, or is already sharded
    (DistributedSampler), is returned as it is; the first kind is then validated in full
    on every rank (same numbers everywhere, nothing to reduce).
    """
    if not is_distributed() or not isinstance(loader, DataLoader):
        return loader, False
    if isinstance(loader.sampler, DistributedSampler):
        return loader, True
    if loader.batch_size is None or isinstance(loader.dataset, IterableDataset):
        return loader, False
    indices = range(rank(), len(loader.dataset), world_size())  # type: ignore[arg-type]
    shard = DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=indices,  # any iterable of indices with a length is a sampler
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )
    return shard, True


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum host numbers over all ranks (identity without a process group)."""
    if not is_distributed():
        return values
    # gloo reduces CPU tensors only; NCCL needs them on the device.
    backend_device = torch.device("cpu") if dist.get_backend() == "gloo" else device
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all ranks (a copy; gloo reduces on the CPU)."""
    if not is_distributed():
        return t
    out = t.detach().to(torch.float64)
    if dist.get_backend() == "gloo" and out.device.type != "cpu":
        out = out.cpu()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()
