"""clip_grad_norm_ / clip_grad_value_ against torch, and AGC against timm's per-tensor maths."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope import adaptive_clip_grad_, clip_grad_norm_, clip_grad_value_

from ._helpers import SHAPES, clone_params, make_params

NORM_TYPES = [1.0, 2.0, 3.0, math.inf]


class TestClipGradNormMatchesTorch:
    @settings(max_examples=25, deadline=None)
    @given(
        shapes=SHAPES,
        seed=st.integers(0, 2**16),
        norm_type=st.sampled_from(NORM_TYPES),
        max_norm=st.floats(1e-3, 1e3),
        scale=st.sampled_from([1e-3, 1.0, 1e3]),
    )
    def test_same_grads_and_norm(self, shapes, seed, norm_type, max_norm, scale):
        ours = make_params(shapes, seed, scale, with_none=True)
        ref = clone_params(ours)
        got = clip_grad_norm_(ours, max_norm, norm_type)
        want = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
        assert torch.equal(got, want)
        for a, b in zip(ours, ref):
            assert (a.grad is None) == (b.grad is None)
            if a.grad is not None:
                assert torch.equal(a.grad, b.grad)

    @pytest.mark.parametrize("foreach", [None, False, True])
    def test_foreach_flag(self, foreach):
        ours = make_params([(4, 3), (3,), (2, 2, 2)], seed=1, scale=10)
        ref = clone_params(ours)
        got = clip_grad_norm_(ours, 1.0, foreach=foreach)
        want = torch.nn.utils.clip_grad_norm_(ref, 1.0, foreach=foreach)
        torch.testing.assert_close(got, want)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a.grad, b.grad)

    def test_plain_reference_formula(self):
        params = make_params([(5, 4), (4,)], seed=3, scale=5)
        g = torch.cat([p.grad.reshape(-1) for p in params])
        norm = g.norm()
        expected = g * min(1.0, 0.5 / (norm.item() + 1e-6))
        returned = clip_grad_norm_(params, 0.5)
        assert returned.dim() == 0
        torch.testing.assert_close(returned, norm)
        torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), expected)
        torch.testing.assert_close(
            torch.cat([p.grad.reshape(-1) for p in params]).norm(),
            torch.tensor(0.5),
            rtol=1e-5,
            atol=1e-5,
        )

    def test_below_limit_untouched(self):
        params = make_params([(3, 3)], seed=4, scale=1e-3)
        before = params[0].grad.clone()
        clip_grad_norm_(params, 10.0)
        assert torch.equal(params[0].grad, before)

    def test_single_tensor_and_generator(self):
        p = make_params([(6,)], seed=5, scale=10)[0]
        q = clone_params([p])[0]
        torch.testing.assert_close(clip_grad_norm_(p, 1.0), torch.nn.utils.clip_grad_norm_(q, 1.0))
        model = torch.nn.Linear(3, 2)
        model(torch.randn(4, 3)).sum().backward()
        norm = clip_grad_norm_(model.parameters(), 0.1)
        total = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()
        assert norm > 0.1 and math.isclose(total.item(), 0.1, rel_tol=1e-4)

    def test_empty_returns_zero(self):
        assert torch.equal(clip_grad_norm_([], 1.0), torch.tensor(0.0))
        p = torch.nn.Parameter(torch.ones(2))
        assert torch.equal(clip_grad_norm_([p], 1.0), torch.tensor(0.0))

    def test_inf_max_norm_only_measures(self):
        params = make_params([(3, 4)], seed=6, scale=100)
        before = params[0].grad.clone()
        norm = clip_grad_norm_(params, max_norm=float("inf"))
        torch.testing.assert_close(norm, before.norm())
        assert torch.equal(params[0].grad, before)

    def test_error_if_nonfinite(self):
        p = torch.nn.Parameter(torch.ones(2))
        p.grad = torch.tensor([1.0, float("nan")])
        with pytest.raises(RuntimeError, match="non-finite"):
            clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
        p.grad = torch.tensor([1.0, float("inf")])
        with pytest.raises(RuntimeError, match="non-finite"):
            clip_grad_norm_([p], 1.0, error_if_nonfinite=True)

    def test_nonfinite_like_torch_without_error(self):
        for bad in (float("nan"), float("inf")):
            ours = make_params([(2, 2)], seed=7)
            ours[0].grad[0, 0] = bad
            ref = clone_params(ours)
            got = clip_grad_norm_(ours, 1.0)
            want = torch.nn.utils.clip_grad_norm_(ref, 1.0)
            torch.testing.assert_close(got, want, equal_nan=True)
            torch.testing.assert_close(ours[0].grad, ref[0].grad, equal_nan=True)


class TestOlderTorch:
    """torch < 2.6 has no get_total_norm/clip_grads_with_norm_: the fallback must agree."""

    @pytest.mark.parametrize("norm_type", NORM_TYPES)
    def test_fallback_matches_torch(self, monkeypatch, norm_type):
        ours = make_params([(5, 4), (4,), (3, 2, 2)], seed=11, scale=4.0, with_none=True)
        ref = clone_params(ours)
        want = torch.nn.utils.clip_grad_norm_(ref, 0.3, norm_type)
        monkeypatch.delattr(torch.nn.utils, "get_total_norm")
        monkeypatch.delattr(torch.nn.utils, "clip_grads_with_norm_")
        got = clip_grad_norm_(ours, 0.3, norm_type)
        torch.testing.assert_close(got, want)
        for a, b in zip(ours, ref):
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad)


class TestLowPrecision:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_norm_in_float32_no_overflow(self, dtype):
        # 300^2 * 1000 elements overflows fp16 (max 65504) if squared in fp16.
        p = torch.nn.Parameter(torch.zeros(1000, dtype=dtype))
        p.grad = torch.full((1000,), 300.0, dtype=dtype)
        norm = clip_grad_norm_([p], 1.0)
        assert norm.dtype == torch.float32
        want = 300.0 * math.sqrt(1000)
        assert math.isclose(norm.item(), want, rel_tol=1e-3)
        assert p.grad.dtype == dtype
        assert math.isclose(p.grad.float().norm().item(), 1.0, rel_tol=1e-2)

    def test_bf16_matches_float32_reference(self):
        params = make_params([(8, 4), (4,)], seed=8, scale=3, dtype=torch.bfloat16)
        ref32 = torch.cat([p.grad.float().reshape(-1) for p in params]).norm()
        norm = clip_grad_norm_(params, 0.5, norm_type=2.0)
        torch.testing.assert_close(norm, ref32)


class TestClipGradValue:
    @settings(max_examples=20, deadline=None)
    @given(shapes=SHAPES, seed=st.integers(0, 2**16), clip=st.floats(1e-3, 10.0))
    def test_matches_torch(self, shapes, seed, clip):
        ours = make_params(shapes, seed, scale=3.0, with_none=True)
        ref = clone_params(ours)
        assert clip_grad_value_(ours, clip) is None
        torch.nn.utils.clip_grad_value_(ref, clip)
        for a, b in zip(ours, ref):
            if a.grad is not None:
                assert torch.equal(a.grad, b.grad)
                assert a.grad.abs().max() <= clip

    def test_guide_example(self):
        torch.manual_seed(0)
        model = torch.nn.Linear(10, 1)
        loss = ((model(torch.randn(32, 10)) - torch.randn(32, 1)) ** 2).mean()
        loss.backward()
        clip_grad_value_(model.parameters(), clip_value=0.01)
        assert max(p.grad.abs().max() for p in model.parameters()) <= 0.01


def timm_adaptive_clip_grad(parameters, clip_factor=0.01, eps=1e-3, norm_type=2.0):
    """timm's per-tensor AGC, verbatim in substance (timm/utils/agc.py)."""

    def unitwise_norm(x):
        if x.ndim <= 1:
            return x.norm(norm_type)
        return x.norm(norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)

    for p in parameters:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p.detach()).clamp_(min=eps).mul_(clip_factor)
        grad_norm = unitwise_norm(p.grad.detach())
        clipped = p.grad * (max_norm / grad_norm.clamp(min=1e-6))
        p.grad.detach().copy_(torch.where(grad_norm < max_norm, p.grad, clipped))


class TestAdaptiveClipGrad:
    @settings(max_examples=25, deadline=None)
    @given(
        shapes=SHAPES,
        seed=st.integers(0, 2**16),
        norm_type=st.sampled_from(NORM_TYPES),
        clip_factor=st.sampled_from([1e-3, 0.01, 0.1, 1.0]),
        scale=st.sampled_from([1e-3, 0.1, 10.0]),
    )
    def test_matches_timm(self, shapes, seed, norm_type, clip_factor, scale):
        ours = make_params(shapes, seed, scale, with_none=True)
        ref = clone_params(ours)
        expected_norm = (
            torch.nn.utils.get_total_norm([p.grad for p in ref if p.grad is not None], norm_type)
            if any(p.grad is not None for p in ref)
            else torch.tensor(0.0)
        )
        got = adaptive_clip_grad_(ours, clip_factor, norm_type=norm_type)
        timm_adaptive_clip_grad(ref, clip_factor, norm_type=norm_type)
        torch.testing.assert_close(got, expected_norm, rtol=1e-5, atol=1e-6)
        for a, b in zip(ours, ref):
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)

    def test_unit_is_row_of_matrix_and_whole_vector(self):
        w = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        w.grad = torch.tensor([[30.0, 40.0], [1.0, 0.0]])
        b = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        b.grad = torch.tensor([0.0, 1.0])
        adaptive_clip_grad_([w, b], clip_factor=0.1, eps=1e-3)
        # row 0: limit 0.1 * 5 = 0.5; row 1: limit 0.1 * eps; bias: limit 0.1 * 1.
        torch.testing.assert_close(w.grad[0], torch.tensor([0.3, 0.4]))
        torch.testing.assert_close(w.grad[1], torch.tensor([1e-4, 0.0]))
        torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.1]))

    def test_conv_units_are_output_channels(self):
        conv = torch.nn.Conv2d(2, 3, 3)
        conv(torch.randn(2, 2, 5, 5)).pow(2).sum().backward()
        ref = clone_params(list(conv.parameters()))
        adaptive_clip_grad_(conv.parameters(), clip_factor=0.01)
        timm_adaptive_clip_grad(ref, 0.01)
        for a, b in zip(conv.parameters(), ref):
            torch.testing.assert_close(a.grad, b.grad)

    def test_empty(self):
        assert torch.equal(adaptive_clip_grad_([], 0.01), torch.tensor(0.0))

    def test_zero_size_non_contiguous_and_mixed_dtype(self):
        gen = torch.Generator().manual_seed(9)
        w = torch.nn.Parameter(torch.randn(4, 6, generator=gen))
        w.grad = torch.randn(6, 4, generator=gen).t()  # same shape, transposed storage
        empty = torch.nn.Parameter(torch.zeros(0, 3))
        empty.grad = torch.zeros(0, 3)
        w64 = torch.nn.Parameter(torch.randn(4, 6, generator=gen, dtype=torch.float64))
        w64.grad = torch.randn(4, 6, generator=gen, dtype=torch.float64)
        ours = [w, empty, w64]
        ref = clone_params(ours)
        assert not w.grad.is_contiguous()
        adaptive_clip_grad_(ours, clip_factor=0.01)
        timm_adaptive_clip_grad(ref, 0.01)
        for a, b in zip(ours, ref):
            assert a.grad.dtype == b.grad.dtype
            torch.testing.assert_close(a.grad, b.grad)


class TestBadInput:
    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), -float("inf")])
    def test_max_norm(self, bad):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grad_norm_([], bad)

    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "two"])
    def test_norm_type(self, bad):
        with pytest.raises(ValueError, match="norm_type"):
            clip_grad_norm_([], 1.0, norm_type=bad)

    @pytest.mark.parametrize("bad", [0.0, -0.5, float("nan")])
    def test_clip_value(self, bad):
        with pytest.raises(ValueError, match="clip_value"):
            clip_grad_value_([], bad)

    @pytest.mark.parametrize(
        "name,kwargs",
        [
            ("clip_factor", {"clip_factor": 0.0}),
            ("clip_factor", {"clip_factor": float("nan")}),
            ("clip_factor", {"clip_factor": float("inf")}),
            ("eps", {"eps": -1.0}),
            ("norm_type", {"norm_type": -2.0}),
        ],
    )
    def test_agc(self, name, kwargs):
        with pytest.raises(ValueError, match=name):
            adaptive_clip_grad_([], **kwargs)

    def test_wrong_kinds(self):
        with pytest.raises(TypeError, match="max_norm"):
            clip_grad_norm_([], None)
        with pytest.raises(TypeError, match="max_norm"):
            clip_grad_norm_([], torch.tensor(1.0))
        with pytest.raises(TypeError, match="model.parameters"):
            clip_grad_norm_(torch.nn.Linear(2, 2), 1.0)
        with pytest.raises(TypeError, match="tensors"):
            clip_grad_norm_([1.0, 2.0], 1.0)
        with pytest.raises(TypeError, match="iterable"):
            clip_grad_value_(3, 1.0)

    @settings(max_examples=30, deadline=None)
    @given(st.floats(allow_nan=True, allow_infinity=True))
    def test_any_float_max_norm_is_accepted_or_valueerror(self, value):
        p = make_params([(3,)], seed=0)
        if value > 0:
            norm = clip_grad_norm_(p, value)
            assert torch.isfinite(norm)
        else:
            with pytest.raises(ValueError, match="max_norm"):
                clip_grad_norm_(p, value)


class TestNoHostSync:
    def test_functions_do_not_sync(self, host_syncs):
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        model(torch.randn(3, 4)).sum().backward()
        with host_syncs() as counts:
            for p in NORM_TYPES:
                clip_grad_norm_(model.parameters(), 0.5, norm_type=p)
                adaptive_clip_grad_(model.parameters(), 0.01, norm_type=p)
            clip_grad_value_(model.parameters(), 0.1)
        assert sum(counts.values()) == 0, counts


def test_mixed_dtypes_and_repeated_tensor():
    a = torch.nn.Parameter(torch.ones(3))
    a.grad = torch.full((3,), 2.0)
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))
    b.grad = torch.full((2,), 3.0, dtype=torch.bfloat16)
    # 12 + 18 (+ 12 again for the repeated a) under the square root.
    norm = clip_grad_norm_([a, b, a], max_norm=float("inf"))
    assert math.isclose(norm.item(), math.sqrt(42.0), rel_tol=1e-6)
    clip_grad_norm_([a, b], max_norm=1.0)
    total = math.sqrt(a.grad.pow(2).sum().item() + b.grad.float().pow(2).sum().item())
    assert math.isclose(total, 1.0, rel_tol=1e-2)
