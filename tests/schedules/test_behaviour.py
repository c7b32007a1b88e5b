"""Values of the schedules beyond the guide, against plain references of their formulas."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from optiscope.schedules import (
    Constant,
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    Decay,
    InverseSqrt,
    LinearWarmup,
    OneCycle,
    PolynomialDecay,
    StepDecay,
    WarmupCosineSchedule,
    WarmupStableDecay,
    join,
)


class TestWarmRestarts:
    def test_float_T_mult_boundaries_are_exact(self):
        s = CosineAnnealingWarmRestarts(1.0, 0.0, T_0=2, T_mult=1.5)
        # cycles: [0,2) [2,5) [5,9.5) [9.5,16.25) [16.25,26.375)
        for k, start in enumerate([0, 2, 5, 9.5, 16.25, 26.375]):
            assert s.cycle(start) == (k, 0.0, 2 * 1.5**k)
            assert s(start) == 1.0
            if start:
                assert s.cycle(math.nextafter(start, 0))[0] == k - 1
        assert s(3.5) == pytest.approx(0.5)  # half-way through [2, 5)

    def test_float_T_0_and_T_mult_against_rational_reference(self):
        T_0, m = 0.1, 1.1  # neither is exact in binary; boundaries compared as rationals
        s = CosineAnnealingWarmRestarts(1.0, 0.0, T_0=T_0, T_mult=m)
        f0, fm = Fraction(T_0), Fraction(m)
        start = Fraction(0)
        for k in range(60):
            t = float(start)
            got_k, cur, length = s.cycle(t)
            # float(start) may round down below the exact boundary: then it's the cycle before
            expect_k = k if Fraction(t) >= start else k - 1
            assert got_k == expect_k
            start += f0 * fm**k
            assert length == float(f0 * fm**got_k)
            assert 0 <= cur <= length  # rounding may reach the length, never pass it

    def test_T_mult_one_is_periodic(self):
        s = CosineAnnealingWarmRestarts(0.1, 0.01, T_0=7, T_mult=1)
        np.testing.assert_array_equal(s.values(np.arange(7)), s.values(np.arange(700, 707)))
        assert s.cycle(10**15 + 3) == ((10**15 + 3) // 7, float((10**15 + 3) % 7), 7.0)

    def test_fractional_steps(self):
        s = CosineAnnealingWarmRestarts(1.0, 0.0, T_0=10, T_mult=2)
        assert s(15.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 20)))
        assert s(29.999) < 1e-6
        assert s(30.0) == 1.0

    def test_cycle_decay_scales_each_peak(self):
        s = CosineAnnealingWarmRestarts(1.0, 0.1, T_0=10, T_mult=2, cycle_decay=0.5)
        assert [s(t) for t in (0, 10, 30, 70)] == [
            1.0,
            0.1 + 0.9 * 0.5,
            0.1 + 0.9 * 0.25,
            0.1 + 0.9 * 0.125,
        ]
        ref = 0.1 + 0.9 * 0.25 * (1 + math.cos(math.pi * 7 / 40)) / 2
        assert s(37) == pytest.approx(ref, rel=1e-15)

    def test_cycle_limit_then_min(self):
        s = CosineAnnealingWarmRestarts(1.0, 0.05, T_0=10, T_mult=2, cycle_limit=2)
        assert s(10) == 1.0  # second cycle still runs
        assert s(29) > 0.05
        assert s(30) == s(31) == s(10**9) == 0.05
        assert [e for e in s.events(100)] == [(10.0, "restart"), (30.0, "cycle limit")]

    def test_restarts_listed(self):
        assert CosineAnnealingWarmRestarts(T_0=10, T_mult=2).restarts(200) == [10, 30, 70, 150]
        assert CosineAnnealingWarmRestarts(T_0=1, T_mult=10).restarts(2000) == [1, 11, 111, 1111]


class TestLinearWarmup:
    def test_start_lr_avoids_a_zero_first_update(self):
        w = LinearWarmup(0.1, 10, start_lr=0.01)
        assert w(0) == 0.01
        assert w(5) == pytest.approx(0.01 + 0.09 * 0.5, rel=1e-15)
        assert w(10) == 0.1

    def test_after_sees_shifted_steps(self):
        after = StepDecay(0.2, 0.5, 5)
        w = LinearWarmup(None, 8, after=after)
        assert w(4) == 0.1  # ramps to after(0) = 0.2
        for t in [8, 9, 12.5, 13, 100]:
            assert w(t) == after(t - 8)

    def test_explicit_target_with_after(self):
        w = LinearWarmup(1.0, 4, after=CosineAnnealingScheduler(1.0, 0.0, 10))
        assert [w(t) for t in (0, 2, 4, 9, 14)] == [0.0, 0.5, 1.0, 0.5, 0.0]

    def test_zero_warmup_is_the_after_schedule(self):
        after = CosineAnnealingScheduler(0.3, 0.0, 10)
        w = LinearWarmup(None, 0, after=after)
        assert [w(t) for t in range(12)] == [after(t) for t in range(12)]
        assert LinearWarmup(0.1, 0)(0) == 0.1  # no division by zero


class TestJoin:
    def test_each_piece_sees_its_own_step(self):
        a, b, c = StepDecay(1.0, 0.5, 2), Constant(0.3), CosineAnnealingScheduler(0.3, 0.0, 10)
        s = join([a, b, c], [5, 8])
        assert [s(t) for t in range(5)] == [a(t) for t in range(5)]
        assert s(5) == s(7.99) == 0.3
        assert [s(t) for t in range(8, 20)] == [c(t - 8) for t in range(8, 20)]

    def test_warmup_cosine_as_composition(self):
        w, total, peak = 100, 1000, 0.01
        s = join([LinearWarmup(peak, w), CosineAnnealingScheduler(peak, 0.0, total - w)], [w])
        for t in [0, 50, 100, 550, 1000]:
            ref = (
                peak * t / w
                if t < w
                else peak * (1 + math.cos(math.pi * (t - w) / (total - w))) / 2
            )
            assert s(t) == pytest.approx(ref, rel=1e-12, abs=1e-18)
        assert s.events(1000) == [(100, "join")]
        assert s.events(2000) == [(100, "join"), (1000, "end of annealing")]


class TestOneCycle:
    def test_endpoints(self):
        s = OneCycle(
            peak_lr=0.1, total_steps=100, pct_start=0.3, div_factor=25, final_div_factor=1e4
        )
        assert s(0) == pytest.approx(0.004)
        assert s(29) == 0.1
        assert s(99) == pytest.approx(0.004 / 1e4)
        assert s(150) == s(99)  # holds the end value
        assert (
            s.get_momentum(0) == 0.95 and s.get_momentum(29) == 0.85 and s.get_momentum(99) == 0.95
        )

    def test_three_phase(self):
        s = OneCycle(
            peak_lr=1.0, total_steps=100, pct_start=0.25, three_phase=True, anneal_strategy="linear"
        )
        assert s(24) == 1.0
        assert s(48) == pytest.approx(1.0 / 25)
        assert s(36) == pytest.approx((1.0 + 1.0 / 25) / 2)


class TestOneVocabulary:
    def test_one_cycle_takes_torch_cos_as_cosine(self):
        a = OneCycle(peak_lr=0.1, total_steps=50, anneal_strategy="cos")
        b = OneCycle(peak_lr=0.1, total_steps=50, anneal_strategy="cosine")
        assert a.anneal_strategy == "cosine" and a.config() == b.config()
        assert list(a.values(60)) == list(b.values(60))

    def test_linear_decay_is_polynomial_power_one(self):
        d, p = Decay(0.3, 17.5, 0.01, shape="linear"), PolynomialDecay(0.3, 17.5, 1.0, 0.01)
        steps = np.linspace(0, 40, 401)
        np.testing.assert_array_equal(d.values(steps), p.values(steps))
        # and both are the straight line from peak_lr to end_lr
        ref = 0.01 + (0.3 - 0.01) * (1 - np.minimum(steps, 17.5) / 17.5)
        np.testing.assert_allclose(d.values(steps), ref, rtol=1e-14, atol=1e-17)

    @pytest.mark.parametrize(
        "schedule, peak, length",
        [
            (Constant(0.2), 0.2, None),
            (StepDecay(0.1, 0.5, 10), 0.1, None),
            (CosineAnnealingScheduler(0.1, 0.0, 30), 0.1, 30),
            (CosineAnnealingWarmRestarts(0.1, 0.0, 10, 2, cycle_limit=3), 0.1, 70.0),
            (CosineAnnealingWarmRestarts(0.1, 0.0, 10, 2), 0.1, None),
            (LinearWarmup(0.1, 20), 0.1, 20),
            (LinearWarmup(None, 20, after=CosineAnnealingScheduler(0.3, 0.0, 80)), 0.3, 100),
            (LinearWarmup(None, 20, after=StepDecay(0.3)), 0.3, None),
            (WarmupCosineSchedule(10, 110, 0.5), 0.5, 110),
            (OneCycle(0.4, 90), 0.4, 90),
            (CyclicLR(0.001, 0.006, 20), 0.006, None),
            (PolynomialDecay(0.2, 40), 0.2, 40),
            (WarmupStableDecay(0.2, 500, 50, 100), 0.2, 500),
            (InverseSqrt(0.2, 100), 0.2, None),
            (join([Constant(0.1), CosineAnnealingScheduler(0.4, 0.0, 30)], [5]), 0.4, 35),
        ],
    )
    def test_peak_and_length(self, schedule, peak, length):
        assert schedule.peak == peak
        assert schedule.length == length


class TestTransformer:
    @pytest.mark.parametrize("d_model, warmup", [(512, 4000), (64, 100), (1024, 1)])
    def test_inverse_sqrt_is_vaswani(self, d_model, warmup):
        peak = (d_model * warmup) ** -0.5
        s = InverseSqrt(peak_lr=peak, warmup_steps=warmup)
        for t in [1, 2, warmup // 2 + 1, warmup, warmup + 1, 3 * warmup, 10**6]:
            ref = d_model**-0.5 * min(t**-0.5, t * warmup**-1.5)
            assert s(t) == pytest.approx(ref, rel=1e-12)
        assert s(0) == 0.0

    def test_inverse_sqrt_timescale(self):
        s = InverseSqrt(peak_lr=1.0, warmup_steps=0, timescale=100)
        assert s(0) == 1.0 and s(300) == pytest.approx(0.5)

    @pytest.mark.parametrize(
        "shape, f",
        [
            ("linear", lambda p: 1 - p),
            ("cosine", lambda p: (1 + math.cos(math.pi * p)) / 2),
            ("1-sqrt", lambda p: 1 - math.sqrt(p)),
        ],
    )
    def test_wsd_phases(self, shape, f):
        s = WarmupStableDecay(
            1.0, total_steps=1000, warmup_steps=100, decay_steps=200, end_lr=0.1, decay_shape=shape
        )
        assert s(0) == 0.0 and s(50) == 0.5
        assert s(100) == s(500) == s(800) == 1.0
        for t in [800, 850, 900, 999, 1000]:
            assert s(t) == pytest.approx(0.1 + 0.9 * f((t - 800) / 200), rel=1e-12)
        assert s(5000) == pytest.approx(0.1)
        labels = [lab for _, lab in s.events(2000)]
        assert labels == ["warmup end", "decay start", "end of decay"]

    def test_wsd_default_decay_is_ten_percent(self):
        s = WarmupStableDecay(1.0, total_steps=1000)
        assert s(900) == 1.0 and s(950) == pytest.approx(0.5)

    def test_decay_shapes_at_quarter(self):
        assert Decay(1.0, 4, shape="1-sqrt")(1) == 0.5
        assert Decay(1.0, 4, shape="linear")(1) == 0.75
