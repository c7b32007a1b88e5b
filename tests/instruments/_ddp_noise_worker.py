"""One rank of the 2-process gloo noise-scale test.

Run as ``python _ddp_noise_worker.py RANK WORLD INIT_FILE OUT_JSON``; then the same
runs again through AdvancedTrainer and InstrumentsCallback (``OUT_JSON.rank<r>``).

Each rank trains the same model on its own shard (8 samples per step) under
DistributedDataParallel with the instruments' DDP noise source; rank 0 writes the history.
"""

from __future__ import annotations

import gc
import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from optiscope.instruments import Instruments

STEPS, LOCAL = 4, 8


def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(STEPS * 2 * LOCAL, 5, generator=g)
    y = torch.randint(0, 3, (STEPS * 2 * LOCAL,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    return model, X, y


def shard(X, y, step, rank):
    start = (2 * step + rank) * LOCAL
    return X[start : start + LOCAL], y[start : start + LOCAL]


def main() -> None:
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        hand_loop(rank, out)
        trainer_run(rank, out)
    finally:
        # The DDP wrappers (which hold the group) went with the functions' frames, so the
        # group's threads are joined here and not left to interpreter exit.
        gc.collect()
        dist.destroy_process_group()


def hand_loop(rank: int, out: str) -> None:
    model, X, y = problem()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.3)
    inst = Instruments(ddp, opt, ["loss", "grad_norm", "noise_scale"], smoothing=0.5)
    assert inst.noise_source == "ddp"
    for step in range(STEPS):
        x, t = shard(X, y, step, rank)
        loss = F.cross_entropy(ddp(x), t)
        loss.backward()
        inst.after_backward(loss, batch_size=len(x))
        inst.before_step()
        opt.step()
        inst.after_step()
        opt.zero_grad()
    inst.flush()
    if rank == 0:
        json.dump(inst.history, open(out, "w"))


def trainer_run(rank: int, out: str) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from optiscope import AdvancedTrainer, InstrumentsCallback

    model, X, y = problem()
    cb = InstrumentsCallback(quantities=["grad_norm", "noise_scale", "sharpness", "alpha"],
                             sharpness_every=2, grad_tests_every=2)  # fmt: skip
    t = AdvancedTrainer(model, torch.optim.SGD(model.parameters(), lr=0.3),
                        torch.nn.CrossEntropyLoss(), verbose=False, progress_bar=False,
                        callbacks=[cb], log_interval=2)  # fmt: skip
    t.train(DataLoader(TensorDataset(X, y), batch_size=LOCAL), None, 1, max_grad_norm=None)
    record = {"source": cb.instruments.noise_source, "history": cb.history,
              "trainer_grad_norms": list(t.grad_norms),
              "alpha_copy": cb.instruments._alpha is not None}  # fmt: skip
    json.dump(record, open(f"{out}.rank{rank}", "w"))


if __name__ == "__main__":
    main()
