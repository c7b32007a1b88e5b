"""Clipper objects: values against torch or a plain reference, NaN/inf, state, host syncs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope import (
    AGC,
    CLIPPERS,
    AutoClip,
    Clipper,
    ClipResult,
    NoClip,
    NormClip,
    ValueClip,
    ZClip,
    get_clipper,
)

from ._helpers import SHAPES, clone_params, make_params

NORM_TYPES = [1.0, 2.0, 3.0, math.inf]


def one_param(value: float) -> list[torch.nn.Parameter]:
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.tensor([value])
    return [p]


def all_clippers() -> list[Clipper]:
    return [
        NormClip(1.0),
        NoClip(),
        ValueClip(0.1),
        AGC(0.01),
        AutoClip(10.0, history_size=8),
        ZClip(warmup_steps=2, max_grad_norm=100.0),
    ]


class TestNormClip:
    @settings(max_examples=25, deadline=None)
    @given(
        shapes=SHAPES,
        seed=st.integers(0, 2**16),
        norm_type=st.sampled_from(NORM_TYPES),
        max_norm=st.floats(1e-3, 1e3),
        scale=st.sampled_from([1e-3, 1.0, 1e3]),
    )
    def test_matches_torch(self, shapes, seed, norm_type, max_norm, scale):
        ours = make_params(shapes, seed, scale, with_none=True)
        ref = clone_params(ours)
        r = NormClip(max_norm, norm_type)(ours)
        want = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
        assert torch.equal(r.total_norm, want)
        for a, b in zip(ours, ref):
            if a.grad is not None:
                assert torch.equal(a.grad, b.grad)
        post = torch.nn.utils.get_total_norm(
            [p.grad for p in ours if p.grad is not None], norm_type
        )
        torch.testing.assert_close(r.clipped_norm, post, rtol=1e-5, atol=1e-6)
        coef = min(1.0, max_norm / (want.item() + 1e-6))
        assert math.isclose(r.clip_coef.item(), coef, rel_tol=1e-6)
        assert r.clipped.item() == (coef < 1.0)
        assert not r.nonfinite.item()

    def test_noclip_measures_only(self):
        params = make_params([(4, 4), (4,)], seed=1, scale=100)
        before = [p.grad.clone() for p in params]
        r = NoClip()(params)
        assert all(torch.equal(p.grad, b) for p, b in zip(params, before))
        torch.testing.assert_close(r.total_norm, torch.nn.utils.get_total_norm(before))
        assert not r.clipped.item() and r.clip_coef.item() == 1.0
        assert isinstance(NoClip(), NormClip) and NoClip().max_norm == math.inf


class TestValueClip:
    def test_matches_torch_and_reports_norms(self):
        ours = make_params([(5, 3), (3,)], seed=2, scale=2)
        ref = clone_params(ours)
        before = torch.nn.utils.get_total_norm([p.grad for p in ref])
        r = ValueClip(0.5)(ours)
        torch.nn.utils.clip_grad_value_(ref, 0.5)
        for a, b in zip(ours, ref):
            assert torch.equal(a.grad, b.grad)
        after = torch.nn.utils.get_total_norm([p.grad for p in ref])
        torch.testing.assert_close(r.total_norm, before)
        torch.testing.assert_close(r.clipped_norm, after)
        torch.testing.assert_close(r.clip_coef, after / before)
        assert r.clipped.item()

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    def test_matches_torch_in_every_dtype(self, dtype):
        ours = make_params([(7, 3), (5,)], seed=5, scale=0.3, dtype=dtype)
        ref = clone_params(ours)
        ValueClip(0.1)(ours)
        torch.nn.utils.clip_grad_value_(ref, 0.1)
        for a, b in zip(ours, ref):
            assert a.grad.dtype == dtype and torch.equal(a.grad, b.grad)

    def test_not_clipped_when_inside(self):
        params = make_params([(3,)], seed=3, scale=1e-3)
        r = ValueClip(1.0)(params)
        assert not r.clipped.item() and r.clip_coef.item() == 1.0


class TestAGC:
    def test_matches_function_and_reports(self):
        from .test_clip_functional import timm_adaptive_clip_grad

        ours = make_params([(6, 4), (4,), (3, 2, 2)], seed=4, scale=1.0)
        ref = clone_params(ours)
        r = AGC(0.01)(ours)
        timm_adaptive_clip_grad(ref, 0.01)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a.grad, b.grad)
        post = torch.nn.utils.get_total_norm([p.grad for p in ours])
        torch.testing.assert_close(r.clipped_norm, post)
        torch.testing.assert_close(r.clip_coef, post / r.total_norm)
        assert r.clipped.item()


def autoclip_reference(norms, percentile, history_size):
    """Plain AutoClip: the percentile of the last `history_size` finite norms, current included."""
    history, limits = [], []
    for n in norms:
        if math.isfinite(n):
            history = (history + [n])[-history_size:]
        limits.append(float(np.percentile(history, percentile)) if history else math.inf)
    return limits


class TestAutoClip:
    @settings(max_examples=20, deadline=None)
    @given(
        norms=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=30),
        percentile=st.floats(0.5, 100.0),
        history_size=st.integers(1, 12),
    )
    def test_matches_numpy_percentile(self, norms, percentile, history_size):
        clip = AutoClip(percentile, history_size=history_size)
        limits = autoclip_reference(norms, percentile, history_size)
        for n, limit in zip(norms, limits):
            p = one_param(n)
            r = clip(p)
            assert math.isclose(clip.threshold().item(), limit, rel_tol=1e-5)
            expected = n * min(1.0, limit / (n + 1e-6))
            assert math.isclose(p[0].grad.item(), expected, rel_tol=1e-5)
            assert math.isclose(r.clipped_norm.item(), expected, rel_tol=1e-5)

    def test_nonfinite_never_enters_history(self):
        clip = AutoClip(50.0, history_size=4)
        for n in [1.0, 3.0]:
            clip(one_param(n))
        state = clip.state_dict()
        for bad in (math.nan, math.inf):
            p = one_param(bad)
            r = clip(p)
            assert r.nonfinite.item() and not r.clipped.item()
            assert math.isnan(p[0].grad.item()) or math.isinf(p[0].grad.item())
        assert torch.equal(clip.history, state["history"]) and clip.count.item() == 2
        assert math.isclose(clip.threshold().item(), 2.0)

    def test_empty_history_threshold_is_inf(self):
        assert clip_threshold_inf(AutoClip())


def clip_threshold_inf(clip: AutoClip) -> bool:
    return math.isinf(clip.threshold().item())


def zclip_reference(norms, alpha, z_thresh, warmup_steps, max_grad_norm, option):
    """ZClip in plain Python floats (the algorithm of Kumar et al. 2025's reference code).

    Warm-up is the first ``warmup_steps`` calls; ``max_grad_norm`` caps every call; the EMAs
    see the spike threshold, not the cap; non-finite norms are left unclipped and never
    enter the statistics.
    """
    mean = var = 0.0
    initialized = False
    warm, out = [], []
    for call, g in enumerate(norms):
        if call < warmup_steps:
            limit = max_grad_norm if max_grad_norm is not None else math.inf
            if math.isfinite(g):
                warm.append(g)
            if call == warmup_steps - 1 and warm:
                mean = sum(warm) / len(warm)
                var = sum((x - mean) ** 2 for x in warm) / len(warm)
                initialized = True
        else:
            if not math.isfinite(g):
                out.append(g)
                continue
            limit = math.inf
            cap = max_grad_norm if max_grad_norm is not None else math.inf
            if not initialized:
                mean, var, initialized = g, 0.0, True
            else:
                std = math.sqrt(var)
                z = (g - mean) / (std + 1e-6)
                if z > z_thresh:
                    limit = {
                        "adaptive_scaling": mean + z_thresh * std * (z_thresh / z),
                        "threshold": mean + z_thresh * std,
                        "mean": mean,
                    }[option]
                v = min(g, limit)
                mean = alpha * mean + (1 - alpha) * v
                var = alpha * var + (1 - alpha) * (v - mean) ** 2
            limit = min(limit, cap)  # the fixed cap holds after warm-up as well
        out.append(g * min(1.0, limit / (g + 1e-6)) if math.isfinite(g) else g)
    return out


class TestZClip:
    @settings(max_examples=20, deadline=None)
    @given(
        norms=st.lists(
            st.one_of(st.floats(0.1, 2.0), st.floats(10.0, 100.0), st.just(math.nan)),
            min_size=1,
            max_size=40,
        ),
        alpha=st.sampled_from([0.5, 0.9, 0.97]),
        z_thresh=st.sampled_from([1.0, 2.5]),
        warmup_steps=st.integers(0, 5),
        max_grad_norm=st.sampled_from([None, 1.0]),
        option=st.sampled_from(["adaptive_scaling", "threshold", "mean"]),
    )
    def test_matches_plain_reference(
        self, norms, alpha, z_thresh, warmup_steps, max_grad_norm, option
    ):
        clip = ZClip(alpha, z_thresh, warmup_steps, max_grad_norm, clip_option=option)
        want = zclip_reference(norms, alpha, z_thresh, warmup_steps, max_grad_norm, option)
        for n, w in zip(norms, want):
            p = one_param(n)
            r = clip(p)
            got = p[0].grad.item()
            if math.isnan(w):
                assert math.isnan(got) and r.nonfinite.item() and not r.clipped.item()
            else:
                assert math.isclose(got, w, rel_tol=2e-4, abs_tol=1e-6), (got, w)

    def test_spike_is_clipped_and_inf_ignored(self):
        clip = ZClip(warmup_steps=5, max_grad_norm=None)
        for n in [1.0, 1.2, 0.8, 1.1, 0.9, 1.0]:
            clip(one_param(n))
        mean, var = clip.mean.clone(), clip.var.clone()
        p = one_param(math.inf)
        r = clip(p)
        assert r.nonfinite.item() and torch.equal(clip.mean, mean) and torch.equal(clip.var, var)
        r = clip(one_param(100.0))
        assert r.clipped.item() and r.clipped_norm.item() < 1.0 + 2.5 * math.sqrt(var.item()) + 1e-3

    def test_warmup_clips_to_max_grad_norm(self):
        clip = ZClip(warmup_steps=3, max_grad_norm=0.5)
        r = clip(one_param(4.0))
        assert math.isclose(r.clipped_norm.item(), 0.5, rel_tol=1e-5)


class TestStateDict:
    @pytest.mark.parametrize("index", range(6))
    def test_round_trip_continues_identically(self, index):
        clip = all_clippers()[index]
        config = {k: v for k, v in clip.state_dict().items() if k in clip._config}
        for step, n in enumerate([1.0, 2.0, 50.0, math.nan, 0.5]):
            clip(make_params([(3, 2), (2,)], seed=step, scale=n))
        twin, fresh = type(clip)(**config), type(clip)(**config)
        twin.load_state_dict(clip.state_dict())
        stateful = isinstance(clip, (AutoClip, ZClip))
        differs = False
        for step in range(4):
            a = make_params([(3, 2), (2,)], seed=100 + step, scale=3.0**step)
            b, c = clone_params(a), clone_params(a)
            ra, rb, rc = clip(a), twin(b), fresh(c)
            for x, y in zip(a, b):
                assert torch.equal(x.grad, y.grad)
            assert ra.to_dict() == rb.to_dict()
            differs |= ra.to_dict() != rc.to_dict()
        # The state must matter, or this test could not fail for stateful clippers.
        assert differs == stateful

    def test_state_survives_torch_save(self, tmp_path):
        clip = AutoClip(history_size=5)
        for n in [1.0, 2.0, 3.0]:
            clip(one_param(n))
        torch.save(clip.state_dict(), tmp_path / "c.pt")
        twin = AutoClip(history_size=5)
        twin.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
        assert torch.equal(twin.history, clip.history) and twin.count.item() == 3

    def test_mismatch_is_an_error(self):
        with pytest.raises(ValueError, match="autoclip"):
            ZClip().load_state_dict(AutoClip().state_dict())
        with pytest.raises(ValueError, match="history_size"):
            AutoClip(history_size=4).load_state_dict(AutoClip(history_size=5).state_dict())
        with pytest.raises(ValueError, match="max_norm"):
            NormClip(1.0).load_state_dict(NormClip(2.0).state_dict())
        state = ZClip().state_dict()
        state["warmup_norms"] = torch.zeros(3)
        with pytest.raises(ValueError, match="warmup_norms"):
            ZClip().load_state_dict(state)


class TestCommon:
    def test_protocol_and_result(self):
        for clip in all_clippers():
            assert isinstance(clip, Clipper)
            r = clip(make_params([(3, 3)], seed=0))
            assert isinstance(r, ClipResult)
            for name in ("total_norm", "clipped_norm", "clip_coef", "clipped", "nonfinite"):
                assert getattr(r, name).dim() == 0
            assert r.clipped.dtype == torch.bool and r.nonfinite.dtype == torch.bool
            with pytest.raises(AttributeError):
                r.total_norm = torch.tensor(1.0)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_nonfinite_grads_left_untouched_and_flagged(self, bad):
        for clip in all_clippers():
            params = make_params([(3, 3), (3,)], seed=1, scale=10.0)
            params[0].grad[1, 1] = bad
            before = [p.grad.clone() for p in params]
            r = clip(params)
            assert r.nonfinite.item() and not r.clipped.item(), type(clip).__name__
            for p, b in zip(params, before):
                torch.testing.assert_close(p.grad, b, equal_nan=True)

    def test_no_grads_gives_zero_norm(self):
        for clip in all_clippers():
            r = clip([torch.nn.Parameter(torch.ones(2))])
            assert r.total_norm.item() == 0.0 and not r.clipped.item()

    def test_to_dict(self):
        d = NormClip(1.0)(one_param(4.0)).to_dict()
        assert d["clipped"] is True and d["nonfinite"] is False
        assert math.isclose(d["total_norm"], 4.0) and math.isclose(
            d["clipped_norm"], 1.0, rel_tol=1e-5
        )

    def test_no_host_sync_per_call(self, host_syncs):
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        clippers = all_clippers()
        with host_syncs() as counts:
            for step in range(4):
                model.zero_grad()
                model(torch.randn(3, 4) * 10**step).sum().backward()
                for clip in clippers:
                    clip(model.parameters())
                    if isinstance(clip, AutoClip):
                        clip.threshold()
        assert sum(counts.values()) == 0, counts


class TestRegistry:
    def test_names(self):
        assert set(CLIPPERS) == {"norm", "value", "agc", "autoclip", "zclip", "none"}
        assert isinstance(get_clipper("norm", max_norm=2.0), NormClip)
        assert get_clipper(" ZClip ", alpha=0.9).alpha == 0.9
        assert isinstance(get_clipper("none"), NoClip)
        for name, cls in CLIPPERS.items():
            assert cls.name == name

    def test_unknown_lists_known(self):
        with pytest.raises(ValueError, match="agc, autoclip, none, norm, value, zclip"):
            get_clipper("clip-all-the-things")
        with pytest.raises(TypeError):
            get_clipper(3)
        with pytest.raises(TypeError):
            get_clipper("norm", max_norm=1.0, bogus=2)


class TestBadInput:
    @pytest.mark.parametrize(
        "make,match",
        [
            (lambda: NormClip(0.0), "max_norm"),
            (lambda: NormClip(math.nan), "max_norm"),
            (lambda: NormClip(-1.0), "max_norm"),
            (lambda: NormClip(1.0, norm_type=0), "norm_type"),
            (lambda: ValueClip(0.0), "clip_value"),
            (lambda: ValueClip(math.nan), "clip_value"),
            (lambda: AGC(clip_factor=0.0), "clip_factor"),
            (lambda: AGC(clip_factor=-1.0), "clip_factor"),
            (lambda: AGC(eps=0.0), "eps"),
            (lambda: AutoClip(percentile=0.0), "percentile"),
            (lambda: AutoClip(percentile=100.5), "percentile"),
            (lambda: AutoClip(percentile=math.nan), "percentile"),
            (lambda: AutoClip(history_size=0), "history_size"),
            (lambda: ZClip(alpha=0.0), "alpha"),
            (lambda: ZClip(alpha=1.0), "alpha"),
            (lambda: ZClip(alpha=math.nan), "alpha"),
            (lambda: ZClip(z_thresh=0.0), "z_thresh"),
            (lambda: ZClip(warmup_steps=-1), "warmup_steps"),
            (lambda: ZClip(max_grad_norm=0.0), "max_grad_norm"),
            (lambda: ZClip(clip_option="median"), "clip_option"),
        ],
    )
    def test_value_errors(self, make, match):
        with pytest.raises(ValueError, match=match):
            make()

    def test_type_errors(self):
        with pytest.raises(TypeError, match="history_size"):
            AutoClip(history_size=2.5)
        with pytest.raises(TypeError, match="warmup_steps"):
            ZClip(warmup_steps=True)
        with pytest.raises(TypeError, match="max_norm"):
            NormClip("1.0")

    @settings(max_examples=40, deadline=None)
    @given(alpha=st.floats(allow_nan=True, allow_infinity=True))
    def test_alpha_range_property(self, alpha):
        if 0.0 < alpha < 1.0:
            assert ZClip(alpha=alpha).alpha == alpha
        else:
            with pytest.raises(ValueError, match="alpha"):
                ZClip(alpha=alpha)

    @settings(max_examples=40, deadline=None)
    @given(q=st.floats(allow_nan=True, allow_infinity=True))
    def test_percentile_range_property(self, q):
        if 0.0 < q <= 100.0:
            assert AutoClip(percentile=q).percentile == q
        else:
            with pytest.raises(ValueError, match="percentile"):
                AutoClip(percentile=q)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCUDA:
    def test_no_device_sync_per_call(self):
        """CUDA's own sync detector: any implicit device->host wait raises."""
        from optiscope import GradientTracker, adaptive_clip_grad_, clip_grad_norm_

        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)).cuda()
        clippers = all_clippers()
        tracker = GradientTracker(model)

        def step(scale: float) -> None:
            model.zero_grad()
            (model(torch.randn(8, 16, device="cuda")).sum() * scale).backward()
            tracker.record()
            for clip in clippers:
                clip(model.parameters())
            clip_grad_norm_(model.parameters(), 1.0)
            adaptive_clip_grad_(model.parameters())

        step(1.0)  # first call moves clipper state to the device
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for s in (1.0, 100.0, float("inf")):
                step(s)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert len(tracker) == 4

    def test_fp16_grads_norm_in_float32(self):
        p = torch.nn.Parameter(torch.zeros(4096, device="cuda", dtype=torch.float16))
        p.grad = torch.full_like(p, 300.0)
        r = NormClip(1.0)([p])
        assert r.total_norm.dtype == torch.float32
        assert math.isclose(r.total_norm.item(), 300.0 * 64, rel_tol=1e-3)
        assert math.isclose(p.grad.float().norm().item(), 1.0, rel_tol=1e-2)
