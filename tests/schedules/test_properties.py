"""Shared invariants of every registered schedule, driven by hypothesis (see ``_cases``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope.schedules import SCHEDULES, get_schedule

from ._cases import CASES


def test_coverage():
    assert set(CASES) == set(SCHEDULES)


def _tol(case):
    return 1e-12 * max(case.hi, 1e-300)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_invariants(name, data):
    case = data.draw(CASES[name])
    s, tol = case.schedule, _tol(case)
    steps = data.draw(st.lists(st.floats(0.0, 3 * case.horizon), min_size=1, max_size=20))
    steps += [0.0, case.horizon, *case.joins, 1e12]
    # finite and within [lo, hi]
    for t in steps:
        v = s(t)
        assert math.isfinite(v), (t, v)
        assert case.lo - tol <= v <= case.hi + tol, (t, v, case.lo, case.hi)
    # values() agrees with calls
    np.testing.assert_array_equal(s.values(steps), [s(t) for t in steps])
    # continuous at joins
    for b in case.joins:
        eps = 1e-9 * b
        assert abs(s(b) - s(b - eps)) <= 1e-6 * case.hi + tol, b
    # monotone warmup
    if case.warmup > 0:
        grid = np.linspace(0.0, case.warmup, 50)
        vals = s.values(grid)
        assert np.all(np.diff(vals) >= -tol), vals
    # the config rebuilds an equal schedule
    again = get_schedule(**s.config())
    assert again == s
    assert [again(t) for t in steps] == [s(t) for t in steps]


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_peak_bounds_the_values_and_length_is_where_they_stop(name, data):
    case = data.draw(CASES[name])
    s, tol = case.schedule, _tol(case)
    # The peak each case was built with; a warmup into a cosine reaches the cosine's value
    # at 0, which may sit an ulp above its initial_lr.
    assert s.peak == pytest.approx(case.hi, rel=1e-14, abs=0.0)
    grid = np.linspace(0.0, 3 * case.horizon, 301)
    assert np.all(s.values(grid) <= s.peak + tol)
    if s.length is not None:
        later = data.draw(st.lists(st.floats(0.0, 3 * case.horizon), min_size=1, max_size=10))
        end = s(s.length)
        # exact for a single piece; a composed length (w + T) may round by an ulp
        for dt in later:
            assert abs(s(s.length + dt) - end) <= tol, (s.length, dt)
        assert abs(end - s(1e12)) <= tol
