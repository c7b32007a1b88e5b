"""The one registry rule: names ignore case, unknown names and keywords name what is allowed."""

from __future__ import annotations

import pytest

from optiscope._internal.registry import build, check_keywords, lookup


class Norm:
    def __init__(self, max_norm: float = 1.0, *, norm_type: float = 2.0) -> None:
        self.max_norm, self.norm_type = max_norm, norm_type


class Anything:
    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs


REG = {"norm": Norm, "value": Anything, "zclip": Anything}


@pytest.mark.parametrize("name", ["norm", "NORM", "  Norm\t"])
def test_lookup_ignores_case_and_surrounding_space(name):
    assert lookup(REG, name, "clipper") is Norm


def test_unknown_name_is_value_error_with_nearest_and_all_names():
    with pytest.raises(ValueError) as info:
        lookup(REG, "nrom", "clipper")
    assert (
        str(info.value)
        == "unknown clipper 'nrom' (did you mean 'norm'?); known: norm, value, zclip"
    )
    with pytest.raises(ValueError, match=r"^unknown clipper 'qqq'; known: norm, value, zclip$"):
        lookup(REG, "qqq", "clipper")


def test_name_of_wrong_kind_is_type_error():
    with pytest.raises(TypeError, match="clipper name must be a string"):
        lookup(REG, 3, "clipper")


def test_unknown_keyword_is_type_error_naming_allowed_ones():
    with pytest.raises(TypeError) as info:
        check_keywords(Norm, {"max_norm": 1.0, "norm_typ": 2}, "clipper 'norm'")
    assert str(info.value) == (
        "unknown parameter 'norm_typ' for clipper 'norm' (did you mean 'norm_type'?); "
        "allowed: max_norm, norm_type"
    )
    check_keywords(Anything, {"whatever": 1}, "clipper 'value'")  # **kwargs takes anything


def test_build_looks_up_checks_and_calls():
    built = build(REG, " Norm ", "clipper", {"max_norm": 0.5})
    assert type(built) is Norm and built.max_norm == 0.5 and built.norm_type == 2.0
    with pytest.raises(TypeError, match="for clipper 'norm'"):
        build(REG, "NORM", "clipper", {"bogus": 1})
