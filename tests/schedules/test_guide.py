"""The guide's schedules: same names, parameters, defaults and values, bit for bit."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optiscope
from optiscope import (
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    ExponentialDecay,
    LinearWarmup,
    StepDecay,
    WarmupCosineSchedule,
    WarmupOptimizer,
)

from . import _guide_reference as ref

GUIDE_CLASSES = [
    "StepDecay",
    "ExponentialDecay",
    "CosineAnnealingScheduler",
    "CosineAnnealingWarmRestarts",
    "LinearWarmup",
    "WarmupCosineSchedule",
    "WarmupOptimizer",
]


@pytest.mark.parametrize("name", GUIDE_CLASSES)
def test_guide_signature_is_kept(name):
    ours = inspect.signature(getattr(optiscope, name).__init__).parameters
    theirs = inspect.signature(getattr(ref, name).__init__).parameters
    # Same leading parameters with the same defaults; ours may only add optional ones.
    assert list(ours)[: len(theirs)] == list(theirs)
    for p, q in zip(list(ours.values()), theirs.values()):
        assert p.default == q.default, p.name
    for extra in list(ours.values())[len(theirs) :]:
        assert extra.default is not inspect.Parameter.empty


def test_compare_schedules_signature():
    assert inspect.signature(optiscope.compare_schedules).parameters["epochs"].default == 100


lrs = st.floats(1e-6, 10.0)


def _same(ours, theirs, steps):
    for t in steps:
        assert ours.get_lr(t) == theirs.get_lr(t), t
        assert ours(t) == theirs.get_lr(t)
    np.testing.assert_array_equal(
        ours.values(np.asarray(steps, float)), [theirs.get_lr(t) for t in steps]
    )


STEPS = [*range(0, 301), 0.5, 9.999, 10.0, 10.25, 77.7, 299.5]


@settings(max_examples=15, deadline=None)
@given(lrs, st.floats(0.01, 1.0), st.integers(1, 50) | st.floats(0.5, 50.0))
def test_step_decay_equals_guide(lr, drop, every):
    _same(StepDecay(lr, drop, every), ref.StepDecay(lr, drop, every), STEPS)


@settings(max_examples=15, deadline=None)
@given(lrs, st.floats(0.0, 1.0))
def test_exponential_equals_guide(lr, rate):
    _same(ExponentialDecay(lr, rate), ref.ExponentialDecay(lr, rate), STEPS)


@settings(max_examples=15, deadline=None)
@given(lrs, st.floats(0.0, 1.0), st.integers(1, 400) | st.floats(0.5, 400.0))
def test_cosine_equals_guide_up_to_T_max(lr, frac, T_max):
    steps = [t for t in STEPS if t <= T_max] + [T_max]
    _same(
        CosineAnnealingScheduler(lr, lr * frac, T_max),
        ref.CosineAnnealingScheduler(lr, lr * frac, T_max),
        steps,
    )


def test_cosine_holds_min_after_T_max():
    # The guide's formula climbs back up after T_max; ours stays at min_lr.
    s = CosineAnnealingScheduler(0.1, 0.001, 100)
    assert ref.CosineAnnealingScheduler(0.1, 0.001, 100).get_lr(150) > 0.04
    assert s(100) == s(150) == s(10_000) == 0.001


@settings(max_examples=20, deadline=None)
@given(lrs, st.floats(0.0, 1.0), st.integers(1, 30), st.integers(1, 4))
def test_warm_restarts_equal_guide_for_integer_periods(lr, frac, T_0, T_mult):
    steps = [*range(0, 400), 0.5, 10.5, 29.75, 123.125]
    _same(
        CosineAnnealingWarmRestarts(lr, lr * frac, T_0, T_mult),
        ref.CosineAnnealingWarmRestarts(lr, lr * frac, T_0, T_mult),
        steps,
    )


@settings(max_examples=15, deadline=None)
@given(lrs, st.integers(1, 2000) | st.floats(0.5, 2000.0))
def test_linear_warmup_equals_guide(lr, w):
    steps = [*range(0, 50), w / 3, w / 2, w - 1e-9, w, w + 1, 3 * w]
    _same(LinearWarmup(lr, w), ref.LinearWarmup(lr, w), [t for t in steps if t >= 0])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 500), st.integers(1, 2000), lrs, st.floats(0.0, 1.0))
def test_warmup_cosine_equals_guide_up_to_total(w, extra, lr, frac):
    total = w + extra
    steps = sorted(
        {
            0,
            w // 2,
            w,
            w + 1,
            w + extra // 2,
            total - 1,
            total,
            *range(0, total, max(1, total // 97)),
        }
    )
    _same(
        WarmupCosineSchedule(w, total, lr, lr * frac),
        ref.WarmupCosineSchedule(w, total, lr, lr * frac),
        steps,
    )


def test_defaults_equal_guide():
    for name in GUIDE_CLASSES[:-1]:
        ours, theirs = getattr(optiscope, name)(), getattr(ref, name)()
        # Past T_max the guide's cosine rises again; ours holds min_lr (tested below).
        horizon = 100 if name == "CosineAnnealingScheduler" else 10_000
        for t in [t for t in [0, 1, 5, 10, 99, 100, 500, 999, 1000, 5000, 9999] if t <= horizon]:
            assert ours(t) == theirs.get_lr(t), (name, t)


def test_guide_test_values():
    # The concrete numbers of the guide's examples.
    assert StepDecay(0.1, 0.5, 10)(25) == 0.025
    assert CosineAnnealingWarmRestarts(0.1, 0.001, 10, 2)(30) == 0.1
    assert LinearWarmup(0.001, 1000)(500) == 0.0005
    assert WarmupCosineSchedule(1000, 10000, 0.001, 1e-5)(1000) == 0.001


def _drive(opt_cls, warmup, max_lr, steps):
    p = torch.nn.Parameter(torch.ones(3))
    opt = opt_cls(torch.optim.SGD([p], lr=0.5), warmup, max_lr)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        p.grad = torch.ones(3)
        opt.step()
        out.append((opt.get_lr(), p.detach().clone()))
    return out


@pytest.mark.parametrize("warmup", [1, 7, 50])
def test_warmup_optimizer_equals_guide(warmup):
    ours = _drive(WarmupOptimizer, warmup, 0.01, 80)
    theirs = _drive(ref.WarmupOptimizer, warmup, 0.01, 80)
    for (a, pa), (b, pb) in zip(ours, theirs):
        assert a == b
        assert torch.equal(pa, pb)


def test_warmup_optimizer_zero_warmup_and_closure():
    p = torch.nn.Parameter(torch.ones(2))
    opt = WarmupOptimizer(torch.optim.SGD([p], lr=0.5), 0, 0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and loss.detach().item() == 2.0
    assert opt.get_lr() == 0.1
    assert torch.allclose(p.detach(), torch.full((2,), 0.8))
    state = opt.state_dict()
    fresh = WarmupOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.5), 0, 0.1)
    fresh.load_state_dict(state)
    assert fresh.current_step == 1
