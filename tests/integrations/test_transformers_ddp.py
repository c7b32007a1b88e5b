"""The instruments' DDP noise source inside the Hugging Face Trainer under ``torchrun``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from tests._processes import assert_worker_ok  # noqa: E402
from tests.instruments.test_ddp import assert_matches_brute_force  # noqa: E402

WORKER = Path(__file__).with_name("_hf_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def test_hf_trainer_ddp_reads_the_ranks_gradients_through_the_comm_hook(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", str(WORKER), str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, env=env, timeout=300, cwd=tmp_path)
    assert_worker_ok(done.returncode, done.stderr)
    record = json.loads((tmp_path / "history.json").read_text())
    # The callback found accelerate's DistributedDataParallel (the Trainer's model_wrapped).
    assert (record["source"], record["world"]) == ("ddp", 2)
    assert_matches_brute_force(record["history"])
