"""The DDP noise source under a real 2-process gloo group, against one process's brute force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from optiscope.instruments import noise_estimates
from tests._processes import assert_worker_ok

WORKER = Path(__file__).with_name("_ddp_noise_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Both runs (hand-written loop, then trainer) in one 2-process group."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    out = tmp_path / "history.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), "2", str(init), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert_worker_ok(p.returncode, err)
    return out


def brute_force(beta: float = 0.5) -> list[tuple[float, float]]:
    """``(smoothed noise scale, |G|)`` per step of the worker's problem, in one process:
    each rank's gradient on its shard, rank 0's as the small batch, their mean stepped."""
    from tests.instruments._ddp_noise_worker import LOCAL, STEPS, problem, shard

    model, X, y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    m_g, m_s, expected = 0.0, 0.0, []
    for step in range(STEPS):
        grads = []
        for rank in range(2):
            x, t = shard(X, y, step, rank)
            g = torch.autograd.grad(F.cross_entropy(model(x), t), list(model.parameters()))
            grads.append(torch.cat([gi.reshape(-1) for gi in g]))
        small = grads[0].square().sum()  # rank 0's own gradient: the small batch
        G = (grads[0] + grads[1]) / 2
        g2, tr = noise_estimates(small.item(), G.square().sum().item(), LOCAL, 2 * LOCAL)
        m_g, m_s = beta * m_g + (1 - beta) * g2, beta * m_s + (1 - beta) * tr
        expected.append((m_s / m_g, G.norm().item()))
        offset = 0
        for p in model.parameters():
            p.grad = G[offset : offset + p.numel()].reshape(p.shape).clone()
            offset += p.numel()
        opt.step()
        opt.zero_grad()
    return expected


def assert_matches_brute_force(history: dict) -> None:
    """Rank 0's history of the worker's problem against :func:`brute_force`."""
    from tests.instruments._ddp_noise_worker import LOCAL

    assert [s for s, _ in history["noise_scale"]] == [1, 2, 3, 4]
    for (_, ns), (_, gn), (ns_ref, gn_ref) in zip(
        history["noise_scale"], history["grad_norm"], brute_force()
    ):
        assert gn == pytest.approx(gn_ref, rel=1e-5)  # the all-reduced gradient
        assert ns == pytest.approx(ns_ref, rel=1e-4)  # rank 0's local gradient vs it
    assert [v for _, v in history["batch_size"]] == [2.0 * LOCAL] * 4


def test_ddp_noise_scale_matches_brute_force(outputs):
    assert_matches_brute_force(json.load(open(outputs)))


def test_callback_under_ddp_uses_the_comm_hook_and_probes_on_rank_0(outputs):
    ranks = [json.load(open(f"{outputs}.rank{r}")) for r in range(2)]
    for r in ranks:
        assert r["source"] == "ddp"
        # The instruments' all-reduced gradient norm is the trainer's own.
        got = [v for _, v in r["history"]["grad_norm"]]
        assert got == pytest.approx(r["trainer_grad_norms"], rel=1e-5)
        assert r["history"]["batch_size"][0][1] == 16.0
    assert [s for s, _ in ranks[0]["history"]["sharpness"]] == [2, 4]
    assert "sharpness" not in ranks[1]["history"]  # probes run on rank 0 only
    assert [s for s, _ in ranks[0]["history"]["alpha"]] == [2, 4]
    assert "alpha" not in ranks[1]["history"]
    assert [r["alpha_copy"] for r in ranks] == [True, False]  # the pre-step copy: rank 0 only
