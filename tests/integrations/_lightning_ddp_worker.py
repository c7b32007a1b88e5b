"""Lightning's DDP (``strategy="ddp"``, 2 CPU processes, gloo) with the instruments' DDP noise.

Run as ``torchrun --standalone --nproc-per-node 2 _lightning_ddp_worker.py OUT_JSON``
(Lightning reads the ranks from torchrun's environment). Each rank trains the model of
``tests/instruments/_ddp_noise_worker.py`` on its own shard (rank r's batch at step s is
``shard(X, y, s, r)``); rank 0 writes what its instruments measured.
"""

from __future__ import annotations

import gc
import json
import sys

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from optiscope.integrations.lightning import OptiscopeCallback
from tests.instruments._ddp_noise_worker import STEPS, problem, shard


class Shards(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net, self.X, self.y = problem()

    def training_step(self, batch, batch_idx):
        x, t = batch
        return F.cross_entropy(self.net(x), t)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3)

    def train_dataloader(self):
        parts = [shard(self.X, self.y, s, self.global_rank) for s in range(STEPS)]
        xs, ts = zip(*parts)
        data = TensorDataset(torch.cat(xs), torch.cat(ts))
        return DataLoader(data, batch_size=len(xs[0]), shuffle=False)


class Dump(pl.Callback):
    def __init__(self, optiscope: OptiscopeCallback, out: str) -> None:
        self.optiscope, self.out = optiscope, out

    def on_train_end(self, trainer, pl_module) -> None:
        inst = self.optiscope.instruments
        if trainer.global_rank == 0:
            record = {"source": inst.noise_source, "world": inst.world_size,
                      "history": inst.history}  # fmt: skip
            json.dump(record, open(self.out, "w"))


def main() -> None:
    try:
        fit(sys.argv[1])
    finally:
        # Lightning's trainer (and its DDP wrapper, which holds the group) went with fit's
        # frame, so the group's threads are joined here and not left to interpreter exit.
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()


def fit(out: str) -> None:
    optiscope = OptiscopeCallback(
        instruments={"quantities": ["loss", "grad_norm", "noise_scale"], "smoothing": 0.5},
        log_every=2,
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS,
        use_distributed_sampler=False, callbacks=[optiscope, Dump(optiscope, out)],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Shards())


if __name__ == "__main__":
    main()
