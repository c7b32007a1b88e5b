"""The name registry used by configs and the command line."""

from __future__ import annotations

import inspect

import pytest

from optiscope.schedules import (
    SCHEDULES,
    CosineAnnealingScheduler,
    LinearWarmup,
    StepDecay,
    get_schedule,
)


def test_names_are_snake_case_and_known():
    for name in [
        "step_decay",
        "exponential",
        "cosine",
        "cosine_warm_restarts",
        "warmup_cosine",
        "linear_warmup",
        "one_cycle",
        "cyclic",
        "multistep",
        "polynomial",
        "inverse_sqrt",
        "wsd",
    ]:
        assert name in SCHEDULES
    assert all(n == n.lower() and " " not in n for n in SCHEDULES)


def test_get_schedule_passes_every_parameter():
    s = get_schedule("cosine", initial_lr=0.2, min_lr=0.01, T_max=50)
    assert type(s) is CosineAnnealingScheduler
    assert (s.initial_lr, s.min_lr, s.T_max) == (0.2, 0.01, 50)
    # halfway down the cosine: min + (initial - min) / 2, worked out by hand
    assert s(25) == pytest.approx(0.105, rel=1e-12)
    assert s(50) == 0.01


@pytest.mark.parametrize("name", ["Cosine", " WSD ", "Step_Decay"])
def test_names_ignore_case_and_spaces(name):
    assert type(get_schedule(name)) is SCHEDULES[name.strip().lower()]


def test_unknown_name_suggests_the_nearest_and_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown schedule 'cosin' \(did you mean 'cosine'"):
        get_schedule("cosin")
    with pytest.raises(ValueError, match="known: constant, cosine, .*step_decay"):
        get_schedule("sgdr")
    with pytest.raises(TypeError, match="schedule name must be a string"):
        get_schedule(3)


def test_unknown_keyword_is_type_error_naming_the_allowed_ones():
    with pytest.raises(
        TypeError,
        match=r"unknown parameter 'T_maxx' for schedule 'cosine' \(did you mean 'T_max'\?\); "
        "allowed: initial_lr, min_lr, T_max",
    ):
        get_schedule("cosine", T_maxx=10)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_peak_and_length_params_are_constructor_parameters(name):
    cls = SCHEDULES[name]
    params = inspect.signature(cls.__init__).parameters
    for attr in ("peak_param", "length_param"):
        value = getattr(cls, attr)
        assert value is None or value in params, (name, attr, value)


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="T_max"):
        get_schedule("cosine", T_max=0)


def test_config_round_trips_with_nesting():
    s = LinearWarmup(None, 10, start_lr=0.001, after=StepDecay(0.1, 0.5, 5))
    cfg = s.config()
    assert cfg["after"] == {
        "name": "step_decay",
        "initial_lr": 0.1,
        "drop_rate": 0.5,
        "epochs_drop": 5,
    }
    again = get_schedule(**cfg)
    assert again == s
    assert [again(t) for t in range(40)] == [s(t) for t in range(40)]
