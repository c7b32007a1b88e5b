"""Sharpness and preconditioned sharpness against exact Hessians; warm starts; restores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optiscope.instruments import Instruments, preconditioned_threshold, sharpness_threshold
from tests.curvature._reference import assert_same_state, state_of
from tests.instruments._helpers import data, exact_hessian, mlp, run_loop


def _train(opt_name, steps=12, every=3, iters=20):
    X, y = data(24)
    m = mlp()
    if opt_name == "gd":
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
    else:
        opt = torch.optim.Adam(m.parameters(), lr=0.02, betas=(0.8, 0.99))
    quantities = ["sharpness"] + (["preconditioned_sharpness"] if opt_name == "adam" else [])
    inst = Instruments(
        m,
        opt,
        quantities,
        sharpness_every=every,
        probe_batch=(X, y),
        loss_fn=F.cross_entropy,
        sharpness_iters=iters,
    )
    seen = {}

    def check(step):
        if step % every == 0:
            H = exact_hessian(m, F.cross_entropy, X, y)
            seen[step] = (H, _adam_d(opt, m) if opt_name == "adam" else None)

    run_loop(m, opt, [(X, y)] * steps, inst, hook=check)
    inst.flush()
    return inst, seen


def _adam_d(opt, model):
    parts = []
    for p in model.parameters():
        st, g = opt.state[p], opt.param_groups[0]
        bc2 = 1 - g["betas"][1] ** float(st["step"])
        parts.append((st["exp_avg_sq"].double() / bc2).sqrt().add(g["eps"]).reshape(-1))
    return torch.cat(parts)


def test_sharpness_matches_exact_hessian_along_training():
    inst, seen = _train("gd")
    history = dict(inst.history["sharpness"])
    assert sorted(history) == [3, 6, 9, 12]
    for step, (H, _) in seen.items():
        exact = torch.linalg.eigvalsh(H)[-1].item()
        assert abs(history[step] - exact) <= 1e-3 * abs(exact), step
    assert dict(inst.history["sharpness_threshold"])[3] == 2 / 0.5


def test_preconditioned_sharpness_matches_exact():
    inst, seen = _train("adam")
    got = dict(inst.history["preconditioned_sharpness"])
    for step, (H, P) in seen.items():
        # P^-1 H is similar to the symmetric P^-1/2 H P^-1/2: same (real) eigenvalues.
        exact = torch.linalg.eigvals(torch.diag(1 / P) @ H).real.max().item()
        assert abs(got[step] - exact) <= 1e-3 * abs(exact), step
        plain = torch.linalg.eigvalsh(H)[-1].item()
        assert abs(dict(inst.history["sharpness"])[step] - plain) <= 1e-3 * abs(plain)
    thr = dict(inst.history["preconditioned_threshold"])[3]
    assert thr == pytest.approx((2 + 2 * 0.8) / ((1 - 0.8) * 0.02))


def test_warm_start_spends_fewer_products():
    warm, _ = _train("gd", steps=24, every=2, iters=60)
    counts = warm.hvp_counts
    # A cold start at each of the same points: a fresh tracker every time.
    X, y = data(24)
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    cold: list[int] = []

    def measure(step):
        if step % 2 == 0:
            fresh = Instruments(
                m,
                opt,
                ["sharpness"],
                probe_batch=(X, y),
                loss_fn=F.cross_entropy,
                sharpness_iters=60,
            )
            op = fresh._probe.hessian
            op.build(fresh.probe_batch)
            fresh._probe.sharpness.measure(op)
            op.clear()
            cold.append(fresh.hvp_counts[0])

    run_loop(m, opt, [(X, y)] * 24, None, hook=measure)
    assert len(cold) == len(counts) == 12
    assert counts[0] == cold[0]  # the first warm measurement is a cold one
    assert sum(counts[1:]) < 0.7 * sum(cold[1:])


def test_probes_leave_model_and_rng_bit_identical():
    from tests.zoo._registry import ZOO

    member = next(z for z in ZOO if z.name == "resnet")
    model = member.model()
    model.train()
    batch = member.batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = member.loss_fn(model(batch[0]), batch[1])
    loss.backward()
    opt.step()  # Adam has state now; gradients stay
    inst = Instruments(
        model,
        opt,
        ["sharpness", "preconditioned_sharpness", "grad_tests", "noise_scale"],
        sharpness_every=1,
        grad_tests_every=1,
        probe_batch=batch,
        loss_fn=member.loss_fn,
        noise_source="split",
        sharpness_iters=5,
    )
    before = state_of(model)
    rng = torch.get_rng_state()
    inst.step = 0
    inst._run_probes(1)
    assert_same_state(state_of(model), before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())
    inst.flush()
    assert {"sharpness", "preconditioned_sharpness", "grad_tests/gsnr", "noise_scale"} <= set(
        inst.history
    )


def test_thresholds_follow_the_optimizer():
    p = [torch.nn.Parameter(torch.zeros(1))]
    assert sharpness_threshold(torch.optim.SGD(p, lr=0.1)) == 20.0
    assert sharpness_threshold(torch.optim.SGD(p, lr=0.1, momentum=0.5)) == 3.0 / 0.1
    nesterov = torch.optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True)
    assert sharpness_threshold(nesterov) == 3.0 / (0.1 * 2.0)
    assert preconditioned_threshold(torch.optim.AdamW(p, lr=1e-3)) == pytest.approx(38 / 1e-3)


def test_hessian_only_probes_leave_model_and_rng_bit_identical():
    # Sharpness alone saves only modes, buffers and RNG: parameters and .grad must come
    # back untouched by construction (BatchNorm in train mode, gradients present).
    from tests.zoo._registry import ZOO

    member = next(z for z in ZOO if z.name == "resnet")
    model = member.model()
    model.train()
    batch = member.batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    member.loss_fn(model(batch[0]), batch[1]).backward()
    opt.step()
    inst = Instruments(
        model, opt, ["sharpness", "preconditioned_sharpness"], sharpness_every=1,
        probe_batch=batch, loss_fn=member.loss_fn, sharpness_iters=4,
    )  # fmt: skip
    before = state_of(model)
    rng = torch.get_rng_state()
    inst._run_probes(1)
    assert_same_state(state_of(model), before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in model.modules())
    assert len(inst.hvp_counts) == len(inst.preconditioned_hvp_counts) == 1


def test_lanczos_stops_at_a_breakdown_with_the_exact_eigenvalue():
    from optiscope.instruments._eigen import Basis, top_eigenpair

    # Two distinct eigenvalues: the Krylov space is invariant after two steps.
    d = torch.tensor([3.0] * 5 + [1.0] * 5)
    start = torch.randn(10, generator=torch.Generator().manual_seed(0))
    top, vec, residual, steps, _ = top_eigenpair(lambda v: d * v, start, 10, 1e-9, Basis())
    assert steps == 2 and residual == 0.0
    assert top == pytest.approx(3.0, rel=1e-6)
    assert torch.allclose(d * vec, 3.0 * vec, atol=1e-5)


def test_the_gap_estimate_stops_a_warm_start_early_within_the_tolerance(monkeypatch):
    import optiscope.instruments._eigen as eigen

    # A well separated top eigenvalue (10 against 6 and below) and a start vector near
    # its eigenvector, as a warm start is: the error estimate r^2 / gap falls below tol/3
    # a step before the Ritz value settles to tol.
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 6.0]), torch.linspace(5.0, -2.0, 198)]).double()
    A = (Q * lam) @ Q.T
    tol = 1e-3
    for size in (0.1, 0.2, 0.3, 0.5):
        start = Q[:, 0] + size * torch.randn(200, generator=g, dtype=torch.float64)
        top, _, _, steps, _ = eigen.top_eigenpair(lambda v: A @ v, start, 50, tol, eigen.Basis())
        assert 10.0 - tol * 10.0 <= top <= 10.0 + 1e-12, size  # Ritz values never overshoot
        with monkeypatch.context() as m:
            m.setattr(eigen, "GAP_SAFETY", float("inf"))  # residual and change rules only
            top_old, _, _, steps_old, _ = eigen.top_eigenpair(
                lambda v: A @ v, start, 50, tol, eigen.Basis()
            )
        assert 10.0 - tol * 10.0 <= top_old <= 10.0 + 1e-12
        assert steps <= steps_old
        if size == 0.1:
            assert steps < steps_old  # the estimate saved a product
