"""Curvature through attention: nn.TransformerEncoder and causal SDPA against exact Hessians.

Fused attention kernels have no double backward; optiscope evaluates on the SDPA math
backend with the multi-head attention fast path off, and puts the caller's choice back.
The exact reference (``torch.autograd.functional.hessian`` in float64) needs the same
kernels to be differentiable twice at all; that they compute the same function as the
fused ones is checked on the loss itself.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from optiscope import curvature
from optiscope.curvature._kernels import double_backward_kernels
from tests.zoo._registry import CausalLM, EncoderClassifier, next_token_loss

from ._reference import assert_same_state, exact_hessian, state_of

VOCAB, SEQ = 16, 8


def _encoder() -> tuple[nn.Module, object, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = EncoderClassifier(d=4, classes=3)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (24, SEQ), generator=g)
    return model, nn.CrossEntropyLoss(), tokens, tokens[:, 0] % 3


def _causal_lm() -> tuple[nn.Module, object, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = CausalLM(d=4, heads=2)
    g = torch.Generator().manual_seed(0)
    seq = (torch.randint(0, VOCAB, (12, 1), generator=g) + torch.arange(SEQ + 1)) % VOCAB
    return model, next_token_loss, seq[:, :-1], seq[:, 1:]


CASES = {"encoder": _encoder, "causal_lm": _causal_lm}


@pytest.fixture(params=list(CASES), scope="module")
def case(request):
    model, loss_fn, X, y = CASES[request.param]()
    model.eval()
    with double_backward_kernels():
        H = exact_hessian(model, loss_fn, X, y)
    return model, loss_fn, X, y, H


def test_small_enough_for_an_exact_hessian(case):
    model, *_, H = case
    n = sum(p.numel() for p in model.parameters())
    assert 150 <= n <= 400 and H.shape == (n, n)


def test_the_math_backend_computes_the_same_loss(case):
    model, loss_fn, X, y, _ = case
    with torch.no_grad():
        fused = loss_fn(model(X), y)
        with double_backward_kernels():
            math = loss_fn(model(X), y)
    torch.testing.assert_close(math, fused, rtol=1e-5, atol=1e-6)


def test_fused_kernels_really_have_no_double_backward(case):
    # Guards the tests below: without the kernel choice, the products would fail.
    model, loss_fn, X, y, _ = case
    params = list(model.parameters())
    g = torch.autograd.grad(loss_fn(model(X), y), params, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for .* is not implemented"):
        torch.autograd.grad(g, params, [torch.ones_like(t) for t in g])


def test_top_eigenvalues_to_relative_1e_3(case):
    model, loss_fn, X, y, H = case
    r = curvature.hessian_eigenvalues(model, loss_fn, X, y, top_k=3, tol=1e-6, seed=0)
    expected = torch.linalg.eigvalsh(H).flip(0)[:3]
    assert ((r.eigenvalues - expected).abs() / expected.abs()).max() < 1e-3


def test_products_and_trace_match_the_exact_hessian(case):
    model, loss_fn, X, y, H = case
    op = curvature.HessianOperator(model, loss_fn, X, y)
    V = torch.randn(3, op.numel, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op.matmat(V).double(), V.double() @ H, rtol=1e-4, atol=1e-5)
    r = curvature.hessian_trace(model, loss_fn, X, y, max_iter=60, seed=0)
    assert abs(r.trace - float(H.trace())) <= 4 * r.stderr


def test_the_callers_kernel_choice_is_restored(case):
    model, loss_fn, X, y, _ = case
    fastpath = torch.backends.mha.get_fastpath_enabled()
    flash = torch.backends.cuda.flash_sdp_enabled()
    math = torch.backends.cuda.math_sdp_enabled()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        curvature.hessian_eigenvalues(model, loss_fn, X, y, max_iter=5, seed=0)
        assert torch.backends.cuda.flash_sdp_enabled()
        assert not torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()) == (
        flash,
        math,
    )


def test_restored_on_error(case):
    model, _, X, y, _ = case
    model.train()
    before, fastpath = state_of(model), torch.backends.mha.get_fastpath_enabled()

    def broken(out, target):
        raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        curvature.hessian_trace(model, broken, X, y, max_iter=6, seed=0)
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    assert_same_state(before, state_of(model))
    model.eval()
