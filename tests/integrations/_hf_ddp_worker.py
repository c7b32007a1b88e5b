"""The Hugging Face Trainer under ``torchrun`` (2 CPU processes, gloo) with the DDP noise.

Run as ``torchrun --standalone --nproc-per-node 2 _hf_ddp_worker.py OUT_DIR``. A sequential
sampler and accelerate's batch sharding give rank r the batch ``2 s + r`` at step s, which
is ``shard(X, y, s, r)`` of ``tests/instruments/_ddp_noise_worker.py``; rank 0 writes what
its instruments measured.
"""

from __future__ import annotations

import gc
import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from optiscope.integrations.transformers import OptiscopeCallback
from tests.instruments._ddp_noise_worker import LOCAL, STEPS, problem


class Net(torch.nn.Module):
    """The worker's model, taking HF-style keyword batches and returning ``{"loss": ...}``."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.X, self.y = problem()

    def forward(self, x, labels):
        return {"loss": F.cross_entropy(self.net(x), labels)}


class Samples(Dataset):
    def __init__(self, X, y) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i):
        return {"x": self.X[i], "labels": self.y[i]}


def main() -> None:
    try:
        train(sys.argv[1])
    finally:
        # The Trainer's DDP wrapper (which holds the group) went with train's frame, so
        # the group's threads are joined here and not left to interpreter exit.
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()


def train(out: str) -> None:
    model = Net()
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=LOCAL, max_steps=STEPS,
        learning_rate=0.3, lr_scheduler_type="constant", optim="sgd", weight_decay=0.0,
        max_grad_norm=0.0, use_cpu=True, ddp_backend="gloo", report_to=[],
        logging_steps=2, save_strategy="no", disable_tqdm=True, seed=0,
        train_sampling_strategy="sequential",
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=Samples(model.X, model.y))
    callback = OptiscopeCallback(
        instruments={"quantities": ["loss", "grad_norm", "noise_scale"], "smoothing": 0.5}
    ).attach(trainer)
    trainer.train()
    inst = callback.instruments
    if trainer.args.process_index == 0:
        record = {"source": inst.noise_source, "world": inst.world_size,
                  "history": inst.history}  # fmt: skip
        json.dump(record, open(f"{out}/history.json", "w"))


if __name__ == "__main__":
    main()
