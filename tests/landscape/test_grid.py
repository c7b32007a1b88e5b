from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optiscope import landscape as L

from .conftest import mlp_with_dropout

finite = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(n=st.one_of(st.floats(2, 100), st.booleans(), st.text(max_size=3)))
def test_grid_rejects_a_num_points_of_the_wrong_kind(n):
    with pytest.raises(TypeError, match="num_points must be an integer"):
        L.grid_coordinates((-1, 1), n)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(-5, 1))
def test_grid_rejects_too_few_points(n):
    with pytest.raises(ValueError, match="num_points"):
        L.grid_coordinates((-1, 1), n)


@settings(max_examples=40, deadline=None)
@given(lo=finite, hi=finite)
def test_grid_rejects_empty_or_reversed_ranges(lo, hi):
    if lo < hi:
        assert L.grid_coordinates((lo, hi), 3)[1] == pytest.approx((lo + hi) / 2)
    else:
        with pytest.raises(ValueError, match="low < high"):
            L.grid_coordinates((lo, hi), 3)


def test_interpolation_line_hits_both_endpoints(digits):
    X, y = digits
    a, b = mlp_with_dropout(0), mlp_with_dropout(1)
    ce = nn.CrossEntropyLoss()
    d = L.interpolation_direction(a.state_dict(), b.state_dict())
    ls = L.line(a, ce, X, y, direction=d, alpha_range=(0, 1), num_points=3)
    with torch.no_grad():
        a.eval()
        b.eval()
        la, lb = float(ce(a(X), y)), float(ce(b(X), y))
    assert ls.loss[0] == pytest.approx(la, rel=1e-5)
    assert ls.loss[-1] == pytest.approx(lb, rel=1e-4)
    assert ls.metadata["directions"][0]["kind"] == "interpolation"
