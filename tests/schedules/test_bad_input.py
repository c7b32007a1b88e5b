"""Bad input: a ValueError/TypeError naming the parameter, at construction, never later."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope.schedules import (
    SCHEDULES,
    Constant,
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    Decay,
    ExponentialDecay,
    InverseSqrt,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PolynomialDecay,
    ScheduleLR,
    StepDecay,
    WarmupCosineSchedule,
    WarmupOptimizer,
    WarmupStableDecay,
    compare_schedules,
    describe,
    join,
)

nan, inf = math.nan, math.inf

BAD = [
    # (factory, kwargs, exception, parameter named in the message)
    (StepDecay, {"initial_lr": -0.1}, ValueError, "initial_lr"),
    (StepDecay, {"initial_lr": nan}, ValueError, "initial_lr"),
    (StepDecay, {"initial_lr": inf}, ValueError, "initial_lr"),
    (StepDecay, {"initial_lr": "0.1"}, TypeError, "initial_lr"),
    (StepDecay, {"initial_lr": True}, TypeError, "initial_lr"),
    (StepDecay, {"drop_rate": 0.0}, ValueError, "drop_rate"),
    (StepDecay, {"drop_rate": -0.5}, ValueError, "drop_rate"),
    (StepDecay, {"drop_rate": 1.5}, ValueError, "drop_rate"),
    (StepDecay, {"epochs_drop": 0}, ValueError, "epochs_drop"),
    (StepDecay, {"epochs_drop": -3}, ValueError, "epochs_drop"),
    (ExponentialDecay, {"decay_rate": -0.1}, ValueError, "decay_rate"),
    (ExponentialDecay, {"decay_rate": nan}, ValueError, "decay_rate"),
    (CosineAnnealingScheduler, {"T_max": 0}, ValueError, "T_max"),
    (CosineAnnealingScheduler, {"T_max": -1}, ValueError, "T_max"),
    (CosineAnnealingScheduler, {"min_lr": -1e-3}, ValueError, "min_lr"),
    (CosineAnnealingScheduler, {"min_lr": 0.5}, ValueError, "min_lr"),
    (CosineAnnealingWarmRestarts, {"T_0": 0}, ValueError, "T_0"),
    (CosineAnnealingWarmRestarts, {"T_0": -5}, ValueError, "T_0"),
    (CosineAnnealingWarmRestarts, {"T_mult": 0.5}, ValueError, "T_mult"),  # guide: hangs
    (CosineAnnealingWarmRestarts, {"T_mult": 0}, ValueError, "T_mult"),
    (CosineAnnealingWarmRestarts, {"T_mult": nan}, ValueError, "T_mult"),
    (CosineAnnealingWarmRestarts, {"cycle_decay": 0.0}, ValueError, "cycle_decay"),
    (CosineAnnealingWarmRestarts, {"cycle_decay": 1.5}, ValueError, "cycle_decay"),
    (CosineAnnealingWarmRestarts, {"cycle_limit": 0}, ValueError, "cycle_limit"),
    (CosineAnnealingWarmRestarts, {"cycle_limit": 2.5}, TypeError, "cycle_limit"),
    (CosineAnnealingWarmRestarts, {"min_lr": 1.0}, ValueError, "min_lr"),
    (MultiStepDecay, {"milestones": [30, 10]}, ValueError, "milestones"),
    (MultiStepDecay, {"milestones": [0, 10]}, ValueError, "milestones"),
    (MultiStepDecay, {"milestones": 10}, TypeError, "milestones"),
    (MultiStepDecay, {"gamma": 0}, ValueError, "gamma"),
    (PolynomialDecay, {"decay_steps": 0}, ValueError, "decay_steps"),
    (PolynomialDecay, {"power": 0}, ValueError, "power"),
    (PolynomialDecay, {"end_lr": 1.0}, ValueError, "end_lr"),
    (LinearWarmup, {"warmup_steps": -1}, ValueError, "warmup_steps"),
    (LinearWarmup, {"warmup_steps": nan}, ValueError, "warmup_steps"),
    (LinearWarmup, {"target_lr": -0.1}, ValueError, "target_lr"),
    (LinearWarmup, {"target_lr": None}, ValueError, "target_lr"),
    (LinearWarmup, {"start_lr": 0.5}, ValueError, "start_lr"),
    (LinearWarmup, {"after": lambda t: 0.1}, TypeError, "after"),
    (WarmupCosineSchedule, {"warmup_steps": -1}, ValueError, "warmup_steps"),
    (WarmupCosineSchedule, {"warmup_steps": 100, "total_steps": 100}, ValueError, "total_steps"),
    (WarmupCosineSchedule, {"warmup_steps": 200, "total_steps": 100}, ValueError, "total_steps"),
    (WarmupCosineSchedule, {"max_lr": -1}, ValueError, "max_lr"),
    (WarmupCosineSchedule, {"min_lr": 1.0}, ValueError, "min_lr"),
    (OneCycle, {"total_steps": 0}, ValueError, "total_steps"),
    (OneCycle, {"total_steps": 10.0}, TypeError, "total_steps"),
    (OneCycle, {"pct_start": 0.0}, ValueError, "pct_start"),
    (OneCycle, {"pct_start": 1.0}, ValueError, "pct_start"),
    (OneCycle, {"pct_start": 0.01, "total_steps": 50}, ValueError, "pct_start"),  # empty phase
    (OneCycle, {"pct_start": 0.6, "three_phase": True}, ValueError, "pct_start"),
    (OneCycle, {"anneal_strategy": "cosin"}, ValueError, "anneal_strategy"),
    (OneCycle, {"anneal_strategy": 1}, TypeError, "anneal_strategy"),
    (OneCycle, {"div_factor": 0}, ValueError, "div_factor"),
    (OneCycle, {"final_div_factor": -1}, ValueError, "final_div_factor"),
    (OneCycle, {"base_momentum": 0.99}, ValueError, "base_momentum"),
    (OneCycle, {"max_momentum": 1.0}, ValueError, "max_momentum"),
    (CyclicLR, {"start_lr": 0.1, "peak_lr": 0.01}, ValueError, "start_lr"),
    (CyclicLR, {"step_size_up": 0}, ValueError, "step_size_up"),
    (CyclicLR, {"step_size_down": -2}, ValueError, "step_size_down"),
    (CyclicLR, {"mode": "sine"}, ValueError, "mode"),
    (CyclicLR, {"gamma": 1.5}, ValueError, "gamma"),
    (InverseSqrt, {"warmup_steps": 0}, ValueError, "timescale"),
    (InverseSqrt, {"timescale": 0}, ValueError, "timescale"),
    (InverseSqrt, {"start_lr": 1.0}, ValueError, "start_lr"),
    (
        WarmupStableDecay,
        {"total_steps": 100, "warmup_steps": 60, "decay_steps": 50},
        ValueError,
        "total_steps",
    ),
    (WarmupStableDecay, {"decay_shape": "sqrt"}, ValueError, "decay_shape"),
    (WarmupStableDecay, {"decay_steps": 0}, ValueError, "decay_steps"),
    (Decay, {"end_lr": 1.0}, ValueError, "end_lr"),
    (Constant, {"peak_lr": -1}, ValueError, "peak_lr"),
]


@pytest.mark.parametrize(
    "factory, kwargs, exc, param",
    BAD,
    ids=[f"{f.__name__}-{'-'.join(map(str, k))}-{i}" for i, (f, k, _, _) in enumerate(BAD)],
)
def test_constructor_rejects(factory, kwargs, exc, param):
    with pytest.raises(exc, match=param):
        factory(**kwargs)


@pytest.mark.parametrize("name", sorted(set(SCHEDULES) - {"join"}))
@pytest.mark.parametrize("t", [-1, -1e-9, nan, inf, -inf])
def test_negative_or_nonfinite_step_is_rejected(name, t):
    s = SCHEDULES[name]() if name not in ("inverse_sqrt",) else SCHEDULES[name](warmup_steps=10)
    with pytest.raises(ValueError, match="step"):
        s(t)
    with pytest.raises(ValueError, match="step"):
        s.values([0.0, t])


@pytest.mark.parametrize("t", ["3", None, True, torch.tensor([1.0, 2.0])])
def test_wrong_kind_of_step(t):
    with pytest.raises(TypeError, match="step"):
        StepDecay()(t)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["initial_lr", "min_lr"]),
    value=st.floats(max_value=-1e-300) | st.just(nan) | st.just(inf),
)
def test_any_bad_lr_is_named(name, value):
    with pytest.raises(ValueError, match=name):
        CosineAnnealingWarmRestarts(**{name: value})


@settings(max_examples=25, deadline=None)
@given(st.floats(-1e6, 1.0, exclude_max=True) | st.just(nan))
def test_any_T_mult_below_one_is_refused_without_hanging(m):
    with pytest.raises(ValueError, match="T_mult"):
        CosineAnnealingWarmRestarts(T_mult=m)


def test_join_errors():
    a, b = Constant(1.0), Constant(0.5)
    with pytest.raises(ValueError, match="boundaries"):
        join([a, b], [])
    with pytest.raises(ValueError, match="boundaries"):
        join([a, b, a], [10, 5])
    with pytest.raises(ValueError, match="boundaries"):
        join([a, b], [0])
    with pytest.raises(TypeError, match="schedules"):
        join([a, 0.5], [10])
    with pytest.raises(TypeError, match="schedules"):
        join(a, [10])


def test_warmup_optimizer_errors():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupOptimizer(opt, -1, 0.1)
    with pytest.raises(ValueError, match="max_lr"):
        WarmupOptimizer(opt, 10, nan)
    with pytest.raises(TypeError, match="optimizer"):
        WarmupOptimizer("sgd", 10, 0.1)


def test_schedule_lr_errors():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="last_epoch"):
        ScheduleLR(torch.optim.SGD([p], lr=0.1), StepDecay(), last_epoch=-2)
    # momentum cycling needs momentum or betas
    with pytest.raises(ValueError, match="momentum"):
        ScheduleLR(torch.optim.Adagrad([p], lr=0.1), OneCycle())
    ScheduleLR(torch.optim.Adagrad([p], lr=0.1), OneCycle(cycle_momentum=False))


def test_plot_and_describe_errors():
    with pytest.raises(ValueError, match="epochs"):
        compare_schedules(epochs=0)
    with pytest.raises(ValueError, match="yscale"):
        compare_schedules(yscale="symlog")
    with pytest.raises(TypeError, match="schedules"):
        compare_schedules(schedules={"a": lambda t: 0.1})
    with pytest.raises(ValueError, match="schedules"):
        compare_schedules(schedules={})
    with pytest.raises(ValueError, match="total_steps"):
        describe(StepDecay(), 0)
    with pytest.raises(ValueError, match="steps"):
        StepDecay().plot(0)
    with pytest.raises(ValueError, match="steps"):
        StepDecay().values(-1)
