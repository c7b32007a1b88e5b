"""One rank of the 2-process gloo test: evaluate a sharded grid, save what it returns.

Run as ``python _dist_worker.py RANK WORLD INIT_FILE OUT_DIR``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from optiscope import landscape as L


def problem():
    """The same model, data and directions on every rank (and in the reference run)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 64, 10),
    )
    X, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    d1, d2 = L.random_directions(model, 2, seed=0)
    return model, nn.CrossEntropyLoss(), X, y, d1, d2


def main() -> None:
    rank, world, init_file, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, loss_fn, X, y, d1, d2 = problem()
        for method in ("walk", "auto"):
            ls = L.plane(
                model,
                loss_fn,
                X,
                y,
                d1=d1,
                d2=d2,
                num_points=(7, 5),
                method=method,
                metrics=("loss", "accuracy"),
                progress=False,
            )
            np.savez(
                f"{out}/rank{rank}_{method}.npz",
                loss=ls.loss,
                acc=ls["accuracy"],
                world=ls.metadata["world_size"],
                method=ls.metadata["method"],
                local=ls.metadata["local_points"],
            )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
