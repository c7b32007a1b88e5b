"""The name registry used by configs and the command line."""

from __future__ import annotations

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


def test_get_schedule_builds_the_class():
    s = get_schedule("cosine", initial_lr=0.2, min_lr=0.01, T_max=50)
    assert isinstance(s, CosineAnnealingScheduler)
    assert s(25) == CosineAnnealingScheduler(0.2, 0.01, 50)(25)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'.*step_decay"):
        get_schedule("cosin")


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="unknown parameter 'lr' for schedule 'cosine'.*T_max"):
        get_schedule("cosine", lr=0.1)


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
