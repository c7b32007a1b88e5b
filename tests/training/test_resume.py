"""Checkpoints: exact resume, atomic writes under SIGKILL, clear errors, early stopping."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from optiscope import AdvancedTrainer, CheckpointError
from optiscope.training._checkpoint import rng_state, set_rng_state


class _Stop(Exception):
    pass


class _StopAt:
    """Simulates a crash right after optimizer step ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_step_end(self, trainer) -> None:
        if trainer.global_step == self.k:
            raise _Stop


def _trainer(make_model, make_loaders, model_seed, seed=7, callbacks=(), accum=1):
    model = make_model(model_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    train, val = make_loaders(32, shuffle=True)  # 10 batches per epoch
    t = AdvancedTrainer(
        model,
        opt,
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        seed=seed,
        log_interval=4,
        callbacks=callbacks,
        grad_accum_steps=accum,
    )
    return t, model, sch, train, val


@pytest.mark.parametrize(
    ("stop_at", "every", "accum"),
    [(13, None, 1), (15, 4, 1), (8, 3, 2)],
    ids=["epoch-boundary", "mid-epoch", "mid-epoch-accumulating"],
)
def test_resume_is_bit_exact(
    make_model, make_loaders, same_weights, tmp_path, stop_at, every, accum
):
    t_full, m_full, sch, train, val = _trainer(make_model, make_loaders, 0, accum=accum)
    t_full.train(train, val, 3, scheduler=sch, max_grad_norm=1.0)

    t1, m1, sch1, train1, val1 = _trainer(
        make_model, make_loaders, 0, callbacks=[_StopAt(stop_at)], accum=accum
    )
    with pytest.raises(_Stop):
        t1.train(
            train1, val1, 3, scheduler=sch1, checkpoint_dir=tmp_path, checkpoint_every_steps=every
        )
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    # (epochs done, micro-batches into the next epoch); an epoch is 10 // accum steps.
    expected_pos = {None: (1, 0), 4: (1, 2), 3: (1, 2)}[every]
    assert (saved["counters"]["epoch"], saved["counters"]["batch_in_epoch"]) == expected_pos

    # A new process in spirit: other initial weights, other global RNG state, no seed.
    torch.manual_seed(12345)
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    t2, m2, sch2, train2, val2 = _trainer(make_model, make_loaders, 99, seed=None, accum=accum)
    t2.train(train2, val2, 3, scheduler=sch2, checkpoint_dir=tmp_path, resume=True)
    assert same_weights(m2, m_full)
    assert t2.train_losses == t_full.train_losses
    assert t2.val_losses == t_full.val_losses
    assert t2.grad_norms == t_full.grad_norms
    assert t2.learning_rates == t_full.learning_rates
    assert sch2.last_epoch == sch.last_epoch == t2.global_step == 30 // accum
    assert t2.epoch == 3
    # The metrics files hold each step and epoch once, though part of the run was redone.
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows if r["kind"] == "step"] == list(range(30 // accum))
    assert [float(r["grad_norm"]) for r in rows if r["kind"] == "step"] == t_full.grad_norms
    assert [int(r["epoch"]) for r in rows if r["kind"] == "epoch"] == [1, 2, 3]
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [x["step"] for x in lines if x["kind"] == "step"] == list(range(30 // accum))


def test_checkpoint_contents_and_weights_only(make_model, make_loaders, tmp_path):
    t, model, sch, train, val = _trainer(make_model, make_loaders, 0)
    t.train(train, val, 1, scheduler=sch, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "clipper",
        "rng",
        "counters",
        "history",
        "config",
        "metrics",
    ):
        assert key in state
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert state["counters"]["global_step"] == 10 and state["counters"]["epoch"] == 1
    assert state["scheduler"]["last_epoch"] == 10
    # Per-step history is kept as tensor columns (cheap to save every few steps).
    assert state["history"]["train_losses"].tolist() == t.train_losses
    steps = state["history"]["steps"]
    assert steps["grad_norm"].tolist() == t.grad_norms and steps["step"].tolist() == list(range(10))
    assert steps["clipped"].tolist() == [int(r.clipped) for r in t.history]
    assert state["config"]["trainer"]["seed"] == 7
    assert (tmp_path / "best.pt").exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_corrupt_and_foreign_checkpoints_are_clear_errors(make_model, make_loaders, tmp_path):
    t, model, sch, train, val = _trainer(make_model, make_loaders, 0)
    t.train(train, val, 1, checkpoint_dir=tmp_path)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        t.load_checkpoint(tmp_path / "torn.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        t.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an optiscope"):
        t.load_checkpoint(tmp_path / "other.pt")
    wide = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
    t2 = AdvancedTrainer(
        wide, torch.optim.SGD(wide.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), verbose=False
    )
    with pytest.raises(CheckpointError, match="shape mismatch"):
        t2.load_checkpoint(tmp_path / "last.pt")


def test_unwritable_checkpoint_dir_fails_before_training(make_model, make_loaders, tmp_path):
    t, model, sch, train, val = _trainer(make_model, make_loaders, 0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="checkpoint_dir"):
        t.train(train, val, 1, checkpoint_dir=blocker / "sub")
    assert t.global_step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_early_stopping_keeps_the_best_checkpoint(make_model, make_loaders, tmp_path):
    t, model, sch, train, val = _trainer(make_model, make_loaders, 0)

    # Train one good epoch, then make every update harmful: lr huge and sign flipped.
    class Sabotage:
        def on_epoch_end(self, trainer):
            if trainer.epoch == 2:
                for g in trainer.optimizer.param_groups:
                    g["lr"] = -1.0

    t.callbacks.append(Sabotage())
    t.train(train, val, 10, checkpoint_dir=tmp_path, early_stopping_patience=2)
    best = min(t.val_losses)
    assert t.best_metric == best and t.best_epoch == t.val_losses.index(best) + 1
    assert t.epoch == t.best_epoch + 2 < 10
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert saved["counters"]["epoch"] == t.best_epoch
    assert saved["history"]["val_losses"][-1].item() == best


_KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from torch.utils.data import DataLoader, TensorDataset
from optiscope import AdvancedTrainer, digits_mlp
torch.manual_seed(0)
X, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
m = digits_mlp(hidden=(256, 128))
t = AdvancedTrainer(m, torch.optim.Adam(m.parameters()), torch.nn.CrossEntropyLoss(),
                    verbose=False, progress_bar=False)
print("ready", flush=True)
t.train(DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True), None, 10**6,
        checkpoint_dir=sys.argv[1], checkpoint_every_steps=1, resume=True)
"""


def test_sigkill_while_checkpointing_leaves_a_loadable_checkpoint(tmp_path):
    from optiscope import digits_mlp
    from optiscope._internal.atomic import temp_files

    script = tmp_path / "loop.py"
    script.write_text(_KILL_SCRIPT)
    ckpt = tmp_path / "ckpt"
    steps = []
    rng = random.Random(0)
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        last = ckpt / "last.pt"
        before = last.stat().st_mtime_ns if last.exists() else None
        try:
            # Wait until this process has written at least one checkpoint of its own.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                not last.exists() or last.stat().st_mtime_ns == before
            ):
                time.sleep(0.02)
            # Kill at a random moment: very likely in the middle of a write.
            time.sleep(rng.uniform(0.1, 0.4))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        m = digits_mlp(hidden=(256, 128))
        t = AdvancedTrainer(
            m, torch.optim.Adam(m.parameters()), torch.nn.CrossEntropyLoss(), verbose=False
        )
        t.load_checkpoint(ckpt / "last.pt")
        steps.append(t.global_step)
        assert all(torch.isfinite(p).all() for p in m.parameters())
    # Each restart resumed from the previous kill's checkpoint and went further.
    assert 1 <= steps[0] and all(a < b for a, b in zip(steps, steps[1:]))
    # Kills mid-write may leave temp files; the next successful write removes them all.
    t.save_checkpoint(ckpt / "last.pt")
    t.save_checkpoint(ckpt / "best.pt")
    assert temp_files(ckpt / "last.pt") == temp_files(ckpt / "best.pt") == []
    assert [p.name for p in ckpt.iterdir() if p.suffix == ".tmp"] == []
