"""The Hessian-trace instrument against the exact trace; its sketch; one graph per step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optiscope.instruments import Instruments, _eigen
from tests.instruments._helpers import data, exact_hessian, mlp, run_loop


def _train(quantities, samples, steps=12, every=3, opt="gd"):
    X, y = data(24)
    m = mlp(dims=(5, 8, 3))
    if opt == "gd":
        optimizer = torch.optim.SGD(m.parameters(), lr=0.5)
    else:
        optimizer = torch.optim.Adam(m.parameters(), lr=0.02)
    inst = Instruments(m, optimizer, quantities, sharpness_every=every, probe_batch=(X, y),
                       loss_fn=F.cross_entropy, trace_samples=samples)  # fmt: skip
    exact = {}

    def check(step):
        if step % every == 0:
            exact[step] = exact_hessian(m, F.cross_entropy, X, y)

    run_loop(m, optimizer, [(X, y)] * steps, inst, hook=check)
    inst.flush()
    return inst, exact


@pytest.mark.parametrize("sketch", [True, False])
def test_trace_is_within_its_standard_error_of_the_exact_trace(sketch):
    quantities = ["hessian_trace"] + (["sharpness"] if sketch else [])
    inst, exact = _train(quantities, samples=32)
    got = dict(inst.history["hessian_trace"])
    err = dict(inst.history["hessian_trace/stderr"])
    assert sorted(got) == sorted(exact) == [3, 6, 9, 12]
    for step, H in exact.items():
        t = torch.trace(H).item()
        assert err[step] > 0
        assert abs(got[step] - t) <= 4 * err[step], (step, got[step], t, err[step])
        assert err[step] <= 0.2 * abs(t)


def _hutchinson_variance(A: torch.Tensor) -> float:
    """Var(g^T A g) for Rademacher g: 2 (|A|_F^2 - sum_i A_ii^2)."""
    return 2 * (A.square().sum() - A.diagonal().square().sum()).item()


def test_the_sharpness_sketch_is_exact_on_its_span_and_cuts_the_variance():
    inst, exact = _train(["sharpness", "hessian_trace"], samples=4, steps=24)
    H = exact[24]
    Q, low_rank = inst._probe.sharpness.sketch()  # the basis of the step-24 measurement
    Q = Q.double()
    assert torch.allclose(Q @ Q.T, torch.eye(len(Q), dtype=torch.float64), atol=1e-5)
    # The sum of the Lanczos alphas is tr(Q H Q^T): the exact low-rank part.
    assert low_rank == pytest.approx(torch.trace(Q @ H @ Q.T).item(), rel=1e-4)
    P = torch.eye(len(H), dtype=torch.float64) - Q.T @ Q
    plain, residual = _hutchinson_variance(H), _hutchinson_variance(P @ H @ P)
    assert residual < 0.6 * plain, (residual, plain, len(Q))


def test_the_hessian_probes_share_one_graph_per_step(monkeypatch):
    builds = []
    real = _eigen.ProbeHessian.build

    def counted(self, batch):
        builds.append(1)
        return real(self, batch)

    monkeypatch.setattr(_eigen.ProbeHessian, "build", counted)
    q = ["sharpness", "preconditioned_sharpness", "hessian_trace"]
    inst, _ = _train(q, samples=4, steps=6, opt="adam")
    assert len(inst.history["hessian_trace"]) == len(inst.history["sharpness"]) == 2
    assert len(inst.history["preconditioned_sharpness"]) == 2
    assert len(builds) == 2  # one forward and backward of the probe per probe step


def test_trace_samples_must_allow_a_standard_error():
    m = mlp()
    with pytest.raises(ValueError, match="trace_samples"):
        Instruments(m, torch.optim.SGD(m.parameters(), lr=0.1), ["hessian_trace"],
                    probe_batch=data(4), trace_samples=1)  # fmt: skip
    with pytest.raises(ValueError, match="probe_batch"):
        Instruments(m, torch.optim.SGD(m.parameters(), lr=0.1), ["hessian_trace"])
