"""The project's argument checks: TypeError for the wrong kind, ValueError for the wrong value."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from optiscope._internal import checks as C


@pytest.mark.parametrize(
    "call, value, expected, typ",
    [
        (lambda v: C.check_real("x", v), 3, 3, int),
        (lambda v: C.check_real("x", v), np.float32(0.5), 0.5, float),
        (lambda v: C.check_real("x", v, allow_inf=True), math.inf, math.inf, float),
        (lambda v: C.check_lr("lr", v), 0, 0, int),
        (lambda v: C.check_positive("m", v), 2, 2.0, float),
        (lambda v: C.check_positive("m", v), math.inf, math.inf, float),
        (lambda v: C.check_open_unit("a", v), 0.25, 0.25, float),
        (lambda v: C.check_int("n", v, low=0), np.int64(4), 4, int),
        (lambda v: C.check_non_negative_int("n", v), 0, 0, int),
        (lambda v: C.check_positive_int("n", v), 1, 1, int),
        (lambda v: C.check_optional_int("n", v, low=1), None, None, type(None)),
        (lambda v: C.check_optional_int("n", v, low=1), 7, 7, int),
        (lambda v: C.check_seed(v), None, None, type(None)),
        (lambda v: C.check_seed(v), 0, 0, int),
        (lambda v: C.check_bool("flag", v), False, False, bool),
        (lambda v: C.check_choice("mode", v, ("a", "b")), "b", "b", str),
        (lambda v: C.check_step(v), 3, 3.0, float),
        (lambda v: C.check_norm_type(v), "inf", math.inf, float),
    ],
)
def test_good_values_come_back_normalised(call, value, expected, typ):
    got = call(value)
    assert got == expected and type(got) is typ


@pytest.mark.parametrize(
    "call, value",
    [
        (lambda v: C.check_real("lr_x", v), "1"),
        (lambda v: C.check_real("lr_x", v), True),
        (lambda v: C.check_positive("lr_x", v), None),
        (lambda v: C.check_open_unit("lr_x", v), "0.5"),
        (lambda v: C.check_int("lr_x", v), 2.0),
        (lambda v: C.check_int("lr_x", v), True),
        (lambda v: C.check_optional_int("lr_x", v), 1.5),
        (lambda v: C.check_seed(v, "lr_x"), 1.0),
        (lambda v: C.check_bool("lr_x", v), 1),
        (lambda v: C.check_choice("lr_x", v, ("a",)), 1),
        (lambda v: C.check_step(v, "lr_x"), "3"),
    ],
)
def test_wrong_kind_is_type_error_naming_the_parameter(call, value):
    with pytest.raises(TypeError, match="lr_x"):
        call(value)


@pytest.mark.parametrize(
    "call, value, allowed",
    [
        (lambda v: C.check_real("lr_x", v), math.nan, "finite"),
        (lambda v: C.check_real("lr_x", v), math.inf, "finite"),
        (lambda v: C.check_real("lr_x", v, low=0, high=1), 1.5, r"\[0, 1\]"),
        (lambda v: C.check_real("lr_x", v, low=0, low_open=True), 0, r"\(0, inf\)"),
        (lambda v: C.check_lr("lr_x", v), -1e-3, r"\[0, inf\)"),
        (lambda v: C.check_positive("lr_x", v), 0, r"\(0, inf\]"),
        (lambda v: C.check_positive("lr_x", v, allow_inf=False), math.inf, r"\(0, inf\)"),
        (lambda v: C.check_positive("lr_x", v), math.nan, "finite"),
        (lambda v: C.check_open_unit("lr_x", v), 1.0, r"\(0, 1\)"),
        (lambda v: C.check_int("lr_x", v, low=1), 0, ">= 1"),
        (lambda v: C.check_int("lr_x", v, low=1, high=3), 4, r"\[1, 3\]"),
        (lambda v: C.check_non_negative_int("lr_x", v), -1, ">= 0"),
        (lambda v: C.check_optional_int("lr_x", v, low=1), 0, ">= 1"),
        (lambda v: C.check_seed(v, "lr_x"), -1, ">= 0"),
        (lambda v: C.check_choice("lr_x", v, ("a", "b")), "c", "'a', 'b'"),
        (lambda v: C.check_step(v, "lr_x"), -1, ">= 0"),
        (lambda v: C.check_norm_type(v, "lr_x"), "two", "'inf'"),
        (lambda v: C.check_norm_type(v, "lr_x"), 0, r"\(0, inf\]"),
    ],
)
def test_wrong_value_is_value_error_naming_parameter_and_range(call, value, allowed):
    with pytest.raises(ValueError, match="lr_x") as info:
        call(value)
    assert re.search(allowed, str(info.value)), str(info.value)
