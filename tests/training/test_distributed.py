"""The trainer under a real 2-process gloo group: sharded validation, exact DDP resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests._processes import assert_worker_ok

WORKER = Path(__file__).with_name("_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, mode: str, world: int = 2) -> None:
    init = tmp_path / f"init_{mode.replace(',', '_')}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(world), str(init), str(tmp_path), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        for r in range(world)
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert_worker_ok(p.returncode, err)


def test_sharded_validation_equals_one_process(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    try:
        from _ddp_worker import N_VAL, _trainer, problem
    finally:
        sys.path.pop(0)
    model, _, val = problem()
    t, _ = _trainer(model)
    loss, acc = t.validate(val)
    _run(tmp_path, "validate")
    ranks = [json.load(open(tmp_path / f"val_rank{r}.json")) for r in range(2)]
    assert ranks[0] == ranks[1]  # all-reduced: every rank reports the same numbers
    # 37 samples over 2 ranks (19 + 18): none repeated, none dropped. Sums are taken in
    # another order than in one process, so the loss agrees to rounding; the accuracy is
    # a ratio of integer counts and agrees exactly.
    assert ranks[0]["loss"] == pytest.approx(loss, rel=1e-6)
    assert ranks[0]["acc"] == acc and abs(acc * N_VAL - round(acc * N_VAL)) < 1e-9


def test_ddp_resume_mid_epoch_is_bit_exact(tmp_path):
    _run(tmp_path, "full,cut")
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    # 96 samples / 2 ranks / batch 8 = 6 steps per epoch: step 4 is inside epoch 1.
    assert saved["counters"]["global_step"] == 4 and saved["counters"]["batch_in_epoch"] == 4
    assert len(saved["rng_ranks"]) == 2
    _run(tmp_path, "resume")
    for rank in range(2):
        full = torch.load(tmp_path / f"full_rank{rank}.pt", weights_only=True)
        resumed = torch.load(tmp_path / f"resume_rank{rank}.pt", weights_only=True)
        assert full["steps"] == resumed["steps"] == 18
        assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
        assert full["grad_norms"] == resumed["grad_norms"]
        assert full["val_losses"] == resumed["val_losses"]
