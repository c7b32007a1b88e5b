"""One rank of the 2-process gloo trainer tests: sharded validation, exact resume under DDP.

Run as ``python _ddp_worker.py RANK WORLD INIT_FILE OUT_DIR MODE`` with MODE one of
``validate``, ``full,cut`` (the uninterrupted run, then one stopped after optimizer step
5 that checkpoints every 2 steps) and ``resume`` (continue from that checkpoint).
"""

from __future__ import annotations

import gc
import json
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from optiscope import AdvancedTrainer, digits_mlp

N_VAL = 37  # not divisible by the world size


def problem(seed: int = 0):
    """The same model and data on every rank (and in the single-process reference)."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(96, 64, generator=g), torch.randint(0, 10, (96,), generator=g)
    Xv, yv = torch.randn(N_VAL, 64, generator=g), torch.randint(0, 10, (N_VAL,), generator=g)
    torch.manual_seed(seed)
    model = digits_mlp(hidden=(16,), dropout=0.2)  # dropout: every rank's RNG matters
    train = DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True)
    val = DataLoader(TensorDataset(Xv, yv), batch_size=8)
    return model, train, val


class _Stop(Exception):
    pass


class _StopAt:
    def on_step_end(self, trainer) -> None:
        if trainer.global_step == 5:
            raise _Stop


def _trainer(model, callbacks=()):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    return AdvancedTrainer(model, opt, torch.nn.CrossEntropyLoss(), verbose=False,
                           progress_bar=False, seed=11, log_interval=2,
                           callbacks=callbacks), opt  # fmt: skip


def _train(mode: str, rank: int, out: str) -> None:
    model, train, val = problem(seed=0 if mode != "resume" else 99)
    t, opt = _trainer(model, [_StopAt()] if mode == "cut" else [])
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
    ckpt = f"{out}/ckpt"
    try:
        t.train(train, val, 3, scheduler=sch, checkpoint_dir=ckpt if mode != "full" else False,
                checkpoint_every_steps=2 if mode == "cut" else None,
                resume=mode == "resume")  # fmt: skip
    except _Stop:
        return
    torch.save(
        {"model": model.state_dict(), "val_losses": list(t.val_losses),
         "grad_norms": list(t.grad_norms), "steps": t.global_step},
        f"{out}/{mode}_rank{rank}.pt",
    )  # fmt: skip


def main() -> None:
    rank, world, init_file, out, mode = sys.argv[1:6]
    rank, world = int(rank), int(world)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if mode == "validate":
            _validate(rank, out)
            return
        for run in mode.split(","):
            _train(run, rank, out)
    finally:
        # The trainers' DDP wrappers (which hold the group) went with the functions'
        # frames, so the group's threads are joined here and not left to interpreter exit.
        gc.collect()
        dist.destroy_process_group()


def _validate(rank: int, out: str) -> None:
    model, _, val = problem()
    t, _ = _trainer(model)
    loss, acc = t.validate(val)
    json.dump({"loss": loss, "acc": acc}, open(f"{out}/val_rank{rank}.json", "w"))


if __name__ == "__main__":
    main()
