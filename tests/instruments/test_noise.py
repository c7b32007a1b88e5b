"""Gradient noise scale: the estimator's expectation, and every source against brute force."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope.instruments import Instruments, noise_estimates
from tests.instruments._helpers import data, mlp, run_loop


def test_estimators_are_unbiased_on_a_known_covariance():
    g = torch.Generator().manual_seed(0)
    d, trials, b_small, b_big = 6, 40_000, 4, 16
    G = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    std = torch.linspace(0.5, 2.0, d, dtype=torch.float64)  # Sigma = diag(std^2)
    samples = G + std * torch.randn(trials, b_big, d, generator=g, dtype=torch.float64)
    small = samples[:, :b_small].mean(1).square().sum(1)
    big = samples.mean(1).square().sum(1)
    g2, trace = noise_estimates(small, big, b_small, b_big)
    # Means over 40k trials: within 3 standard errors of |G|^2 and tr(Sigma).
    for est, true in ((g2, G.square().sum()), (trace, std.square().sum())):
        se = est.std() / trials**0.5
        assert abs(est.mean() - true) < 3 * se
    # The plug-in |G_big|^2 is biased upward by tr(Sigma)/B_big; the estimator is not.
    assert big.mean() - G.square().sum() > 10 * (big.std() / trials**0.5)


def _per_sample_grads(model, x, y):
    """Plain autograd, one sample at a time."""
    out = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        out.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]))
    model.zero_grad()
    return torch.stack(out)


def _ema_reference(pairs, beta):
    """(noise_scale, |G|^2, tr Sigma) after each step with bias-corrected EMAs."""
    out, m_g, m_s = [], 0.0, 0.0
    for n, (g2, tr) in enumerate(pairs, start=1):
        m_g, m_s = beta * m_g + (1 - beta) * g2, beta * m_s + (1 - beta) * tr
        c = 1 - beta**n
        out.append((m_s / m_g, m_g / c, m_s / c))
    return out


@pytest.mark.parametrize("scale", [None, 1024.0])
def test_micro_batches_against_per_sample_brute_force(scale):
    accum, micro, steps, beta = 4, 3, 5, 0.8
    X, y = data(accum * micro * steps)
    batches = [(X[i : i + micro], y[i : i + micro]) for i in range(0, len(X), micro)]
    model = mlp()
    reference_model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    inst = Instruments(model, opt, ["noise_scale"], accumulation_steps=accum, smoothing=beta)
    assert inst.noise_source == "micro_batches"
    if scale is None:
        run_loop(model, opt, batches, inst, accum=accum)
    else:  # a GradScaler's way: scaled loss, unscaled gradients before the step
        for s in range(steps):
            for x, t in batches[s * accum : (s + 1) * accum]:
                loss = F.cross_entropy(model(x), t)
                (loss * scale / accum).backward()
                inst.after_backward(loss, batch_size=len(x), grad_scale=torch.tensor(scale))
            for p in model.parameters():
                p.grad /= scale
            inst.before_step()
            opt.step()
            inst.after_step()
            opt.zero_grad()
    inst.flush()

    ref_opt = torch.optim.SGD(reference_model.parameters(), lr=0.2)
    estimates = []
    for s in range(steps):
        group = batches[s * accum : (s + 1) * accum]
        per_sample = _per_sample_grads(
            reference_model, torch.cat([b[0] for b in group]), torch.cat([b[1] for b in group])
        )
        micro_grads = per_sample.reshape(accum, micro, -1).mean(1)
        small = micro_grads.square().sum(1).mean()
        big = per_sample.mean(0).square().sum()
        b_s, b_b = micro, accum * micro
        estimates.append(
            ((b_b * big - b_s * small) / (b_b - b_s), (small - big) / (1 / b_s - 1 / b_b))
        )
        full = per_sample.mean(0)
        offset = 0
        for p in reference_model.parameters():
            p.grad = full[offset : offset + p.numel()].reshape(p.shape).clone()
            offset += p.numel()
        ref_opt.step()
        ref_opt.zero_grad()
    expected = _ema_reference([(float(a), float(b)) for a, b in estimates], beta)
    got = list(
        zip(*(inst.history[k] for k in ("noise_scale", "noise_scale/grad_sq", "noise_scale/trace")))
    )
    assert [row[0][0] for row in got] == [1, 2, 3, 4, 5]
    for row, exp in zip(got, expected):
        assert [v for _, v in row] == pytest.approx(list(exp), rel=2e-3)
    assert inst.history["batch_size"][-1] == (5, 12.0)
    assert inst.history["critical_batch_size"] == inst.history["noise_scale"]


def test_split_against_per_sample_brute_force():
    X, y = data(12)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: one estimate thrice
    inst = Instruments(
        model,
        opt,
        ["noise_scale"],
        probe_batch=(X, y),
        split=3,
        loss_fn=F.cross_entropy,
        smoothing=0.5,
    )
    assert inst.noise_source == "split"
    run_loop(model, opt, [(X, y)] * 3, inst)
    inst.flush()
    per_sample = _per_sample_grads(model.eval(), X, y)
    small = per_sample.reshape(3, 4, -1).mean(1).square().sum(1).mean()
    big = per_sample.mean(0).square().sum()
    g2, tr = noise_estimates(small, big, 4, 12)
    for key, value in (
        ("noise_scale", tr / g2),
        ("noise_scale/grad_sq", g2),
        ("noise_scale/trace", tr),
    ):
        assert [s for s, _ in inst.history[key]] == [1, 2, 3]
        # Constant estimates: the bias-corrected EMA equals them at every step.
        for _, v in inst.history[key]:
            assert v == pytest.approx(float(value), rel=1e-4)


def test_one_micro_batch_per_step_records_nothing():
    X, y = data(16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    inst = Instruments(model, opt, ["noise_scale"], noise_source="micro_batches")
    run_loop(model, opt, [(X[:8], y[:8]), (X[8:], y[8:])], inst)
    assert "noise_scale" not in inst.values()


@settings(max_examples=50, deadline=None)
@given(
    g2=st.floats(0.0, 1e3),
    trace=st.floats(0.0, 1e3),
    b_small=st.integers(1, 512),
    factor=st.integers(2, 64),
)
def test_estimators_invert_the_expectations(g2, trace, b_small, factor):
    """E|G_B|^2 = |G|^2 + tr(Sigma)/B; the estimators recover |G|^2 and tr(Sigma) from it."""
    b_big = b_small * factor
    small, big = g2 + trace / b_small, g2 + trace / b_big
    got_g2, got_trace = noise_estimates(small, big, b_small, b_big)
    assert got_g2 == pytest.approx(g2, rel=1e-6, abs=1e-6)
    assert got_trace == pytest.approx(trace, rel=1e-6, abs=1e-4)
