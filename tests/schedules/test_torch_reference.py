"""Each schedule equals the torch scheduler it mirrors, driven step by step (rel. 1e-9)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as tls

from optiscope.schedules import (
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialDecay,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PolynomialDecay,
    ScheduleLR,
    StepDecay,
)

N_SETS = 16


def _opt(lr=1.0, kind="sgd"):
    p = torch.nn.Parameter(torch.zeros(2))
    if kind == "adam":
        return torch.optim.Adam([p], lr=lr)
    return torch.optim.SGD([p], lr=lr, momentum=0.9)


def _momentum(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def _drive(opt, sched, steps):
    """(lr, momentum) seen by update k = 0..steps-1 in the normal loop."""
    out = []
    for _ in range(steps):
        g = opt.param_groups[0]
        out.append((g["lr"], _momentum(g)))
        opt.step()
        sched.step()
    return out


def _close(a, b, scale):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-13 * max(scale, 1e-300))


def _assert_lrs(ours, torch_lrs, scale):
    for k, (a, b) in enumerate(zip(ours, torch_lrs)):
        assert _close(a, b, scale), (k, a, b)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_step_decay_equals_torch_step_lr(rng):
    for _ in range(N_SETS):
        lr = float(10 ** rng.uniform(-5, 0))
        gamma = float(rng.uniform(0.05, 1.0))
        step_size = int(rng.integers(1, 60))
        opt = _opt(lr)
        seen = _drive(opt, tls.StepLR(opt, step_size, gamma), 300)
        s = StepDecay(lr, gamma, step_size)
        _assert_lrs([s(k) for k in range(300)], [x for x, _ in seen], lr)


def test_exponential_decay_equals_torch_exponential_lr(rng):
    # torch's gamma per step is exp(-decay_rate); torch multiplies step by step.
    for _ in range(N_SETS):
        lr = float(10 ** rng.uniform(-5, 0))
        rate = float(rng.uniform(0.0, 0.1))
        opt = _opt(lr)
        seen = _drive(opt, tls.ExponentialLR(opt, gamma=math.exp(-rate)), 300)
        s = ExponentialDecay(lr, rate)
        _assert_lrs([s(k) for k in range(300)], [x for x, _ in seen], lr)


def test_linear_warmup_equals_torch_linear_lr(rng):
    # LinearLR ramps base * start_factor -> base over total_iters, then holds base.
    for _ in range(N_SETS):
        lr = float(10 ** rng.uniform(-5, 0))
        start_factor = float(rng.uniform(0.01, 1.0))
        w = int(rng.integers(1, 200))
        opt = _opt(lr)
        linear = tls.LinearLR(opt, start_factor=start_factor, end_factor=1.0, total_iters=w)
        seen = _drive(opt, linear, w + 50)
        s = LinearWarmup(target_lr=lr, warmup_steps=w, start_lr=lr * start_factor)
        _assert_lrs([s(k) for k in range(w + 50)], [x for x, _ in seen], lr)


def test_multistep_equals_torch(rng):
    for _ in range(N_SETS):
        lr = float(10 ** rng.uniform(-5, 0))
        gamma = float(rng.uniform(0.05, 1.0))
        milestones = sorted(int(m) for m in rng.integers(1, 200, size=rng.integers(1, 6)))
        opt = _opt(lr)
        seen = _drive(opt, tls.MultiStepLR(opt, milestones, gamma), 250)
        s = MultiStepDecay(lr, milestones, gamma)
        _assert_lrs([s(k) for k in range(250)], [x for x, _ in seen], lr)


def test_polynomial_equals_torch(rng):
    for _ in range(N_SETS):
        lr = float(10 ** rng.uniform(-5, 0))
        total = int(rng.integers(1, 200))
        power = float(rng.uniform(0.3, 4.0))
        opt = _opt(lr)
        seen = _drive(opt, tls.PolynomialLR(opt, total_iters=total, power=power), total + 20)
        s = PolynomialDecay(lr, total, power)
        _assert_lrs([s(k) for k in range(total + 20)], [x for x, _ in seen], lr)


def test_cosine_equals_torch_up_to_T_max(rng):
    for _ in range(N_SETS):
        lr = float(10 ** rng.uniform(-5, 0))
        eta_min = lr * float(rng.uniform(0, 0.5))
        T_max = int(rng.integers(1, 300))
        opt = _opt(lr)
        seen = _drive(opt, tls.CosineAnnealingLR(opt, T_max, eta_min), T_max + 1)
        s = CosineAnnealingScheduler(lr, eta_min, T_max)
        _assert_lrs([s(k) for k in range(T_max + 1)], [x for x, _ in seen], lr)


def test_warm_restarts_equal_torch_stepwise(rng):
    for _ in range(N_SETS):
        lr = float(10 ** rng.uniform(-5, 0))
        eta_min = lr * float(rng.uniform(0, 0.5))
        T_0, T_mult = int(rng.integers(1, 30)), int(rng.integers(1, 4))
        opt = _opt(lr)
        seen = _drive(opt, tls.CosineAnnealingWarmRestarts(opt, T_0, T_mult, eta_min), 400)
        s = CosineAnnealingWarmRestarts(lr, eta_min, T_0, T_mult)
        _assert_lrs([s(k) for k in range(400)], [x for x, _ in seen], lr)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_one_cycle_lrs_and_momenta_equal_torch(rng, kind):
    for i in range(N_SETS):
        max_lr = float(10 ** rng.uniform(-4, 0))
        total = int(rng.integers(20, 300))
        three = bool(i % 2)
        pct = float(rng.uniform(0.1, 0.45 if three else 0.9))
        kw = dict(
            pct_start=pct,
            anneal_strategy=["cos", "linear"][int(rng.integers(0, 2))],
            div_factor=float(rng.uniform(2, 50)),
            final_div_factor=float(10 ** rng.uniform(0, 5)),
            three_phase=three,
            base_momentum=float(rng.uniform(0.7, 0.85)),
            max_momentum=float(rng.uniform(0.86, 0.99)),
        )
        opt = _opt(1.0, kind)
        ref = _drive(opt, tls.OneCycleLR(opt, max_lr, total_steps=total, **kw), total)
        opt2 = _opt(1.0, kind)
        ours = _drive(opt2, ScheduleLR(opt2, OneCycle(max_lr, total, **kw)), total)
        for k, ((a, ma), (b, mb)) in enumerate(zip(ours, ref)):
            assert _close(a, b, max_lr), (i, k, a, b)
            assert _close(ma, mb, 1.0), (i, k, ma, mb)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_lrs_and_momenta_equal_torch(rng, mode):
    for _ in range(N_SETS // 2):
        base = float(10 ** rng.uniform(-5, -2))
        high = base * float(rng.uniform(1.5, 20))
        up = int(rng.integers(1, 40))
        down = None if rng.random() < 0.3 else int(rng.integers(1, 40))
        gamma = float(rng.uniform(0.95, 1.0))
        kw = dict(step_size_up=up, step_size_down=down, mode=mode, gamma=gamma)
        opt = _opt(1.0)
        ref = _drive(opt, tls.CyclicLR(opt, base, high, **kw), 300)
        opt2 = _opt(1.0)
        ours = _drive(opt2, ScheduleLR(opt2, CyclicLR(base, high, **kw)), 300)
        for k, ((a, ma), (b, mb)) in enumerate(zip(ours, ref)):
            assert _close(a, b, high), (k, a, b)
            assert _close(ma, mb, 1.0), (k, ma, mb)


def _restart_points(T_0, T_mult, limit):
    k, out = 1, []
    while (start := T_0 * (T_mult**k - 1) // (T_mult - 1)) <= limit:
        out.append(start)
        k += 1
    return out


def test_every_exact_restart_gets_the_peak_unlike_torch_closed_form():
    # torch's step(epoch) finds the cycle with a floating-point log; some restart points
    # land at the very end of the previous cycle (lr ~ min) instead of the peak.
    torch_wrong = total = 0
    opt = _opt(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step(epoch) is deprecated in torch
        for T_0 in range(1, 11):
            for T_mult in range(2, 11):
                s = CosineAnnealingWarmRestarts(1.0, 0.0, T_0, T_mult)
                ts = tls.CosineAnnealingWarmRestarts(opt, T_0, T_mult)
                for start in _restart_points(T_0, T_mult, 10**6):
                    total += 1
                    assert s(start) == 1.0, (T_0, T_mult, start)
                    assert s.cycle(start)[1] == 0.0
                    assert s(start - 1) < 1.0 or T_0 == 1
                    ts.step(start)
                    torch_wrong += ts.T_cur != 0
    assert total == 782
    assert torch_wrong > 0  # 50 of 782 with torch 2.13


def test_known_float_log_failure_case():
    s = CosineAnnealingWarmRestarts(initial_lr=1.0, min_lr=0.0, T_0=1, T_mult=10)
    assert s(111) == 1.0
    assert s.cycle(111) == (3, 0.0, 1000.0)
    assert s(110) < 1e-3  # last step of the 100-step cycle, near the minimum
    opt = _opt(1.0)
    ts = tls.CosineAnnealingWarmRestarts(opt, T_0=1, T_mult=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts.step(111)
    assert opt.param_groups[0]["lr"] == 0.0  # torch: the minimum instead of the peak
