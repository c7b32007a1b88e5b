from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from tests._processes import assert_worker_ok

from optiscope import landscape as L

WORKER = Path(__file__).with_name("_dist_worker.py")


def _reference(method):
    sys.path.insert(0, str(WORKER.parent))
    try:
        from _dist_worker import problem
    finally:
        sys.path.pop(0)
    model, loss_fn, X, y, d1, d2 = problem()
    return L.plane(
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


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_gloo_ranks_equal_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), "2", str(init), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    for p, log in zip(procs, logs):
        assert_worker_ok(p.returncode, log)
    for method in ("walk", "auto"):
        ref = _reference(method)
        results = [np.load(tmp_path / f"rank{r}_{method}.npz") for r in range(2)]
        for res in results:
            assert int(res["world"]) == 2
            assert str(res["method"]) == ref.metadata["method"]
            # Every rank returns the full grid, not only its shard, equal bit for bit to
            # one process (the method is a rule, not a race between timings).
            np.testing.assert_array_equal(res["loss"], ref.loss)
            np.testing.assert_array_equal(res["acc"], ref["accuracy"])
        np.testing.assert_array_equal(results[0]["loss"], results[1]["loss"])
        # The grid was split between the ranks, not computed twice.
        assert [int(r["local"]) for r in results] == [18, 17]


def test_distributed_true_without_init_is_an_error():
    from .conftest import mlp_with_dropout

    model = mlp_with_dropout()
    import torch

    with pytest.raises(ValueError, match="not initialised"):
        L.line(
            model,
            lambda o, t: o.mean(),
            torch.randn(4, 64),
            None,
            direction=L.random_direction(model, seed=0),
            num_points=3,
            distributed=True,
        )
