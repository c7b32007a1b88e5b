"""Every curvature function on every zoo member, against an independent reference.

The reference Hessian-vector product is plain autograd on a float64 copy of the model
called directly (``backward`` of ``grad(create_graph=True)``, batches weighted by size),
not optiscope's ``torch.func`` path. Members small enough (a few hundred parameters) get
their exact Hessian from it, column by column, and ``eigvalsh``; the others are checked
through eigenpair residuals and Rayleigh quotients under the reference product. Every
call must leave the model bit-for-bit as it was: parameters, gradients, buffers
(BatchNorm running statistics), ``requires_grad`` flags and train/eval modes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from optiscope import curvature
from optiscope.batch_loss import as_batch_loss
from optiscope.curvature._kernels import double_backward_kernels
from tests.curvature._reference import assert_same_state, state_of
from tests.zoo._registry import ZOO, ZooMember

EXACT_MAX = 400  # parameters up to which the exact Hessian is built from reference products


class Reference:
    """The member's Hessian by plain double backward on a float64 copy in eval mode."""

    def __init__(self, member: ZooMember, model: nn.Module, batches: list[Any]) -> None:
        self.model = copy.deepcopy(model).double().eval()
        self.bl = as_batch_loss(member.loss_fn)
        self.batches = [_to_double(b) for b in batches]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.numel = sum(p.numel() for p in self.params)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self._H: torch.Tensor | None = None

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        v = v.double()
        parts = list(v.split([p.numel() for p in self.params]))
        total, count = torch.zeros_like(v), 0
        with double_backward_kernels():
            for batch in self.batches:
                loss = self.bl(self.model, batch)
                g = torch.autograd.grad(loss, self.params, create_graph=True)
                dots = sum((gi * vi.view_as(gi)).sum() for gi, vi in zip(g, parts))
                hv = torch.autograd.grad(dots, self.params)
                n = self.bl.size(batch)
                total += n * torch.cat([h.reshape(-1) for h in hv])
                count += n
        return total / count

    @property
    def exact(self) -> bool:
        return self.numel <= EXACT_MAX

    @property
    def H(self) -> torch.Tensor:
        if self._H is None:
            eye = torch.eye(self.numel, dtype=torch.float64)
            H = torch.stack([self.hvp(e) for e in eye])
            self._H = (H + H.T) / 2
        return self._H


def _to_double(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.double() if batch.is_floating_point() else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_double(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_double(v) for k, v in batch.items()}
    return batch


@pytest.fixture
def setup(member: ZooMember):
    model = member.model()
    # Train mode and a stale gradient make any leak of mode or .grad visible.
    model.train()
    first = next(model.parameters())
    first.grad = torch.full_like(first, 0.5)
    batches = list(member.loader())
    return member, model, batches, Reference(member, model, batches)


def _unchanged(model: nn.Module, call: Callable[[], Any]) -> Any:
    before = state_of(model)
    out = call()
    assert_same_state(before, state_of(model))
    return out


def _flat(d: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([d[n].reshape(-1) for n in names]).double()


def _check_eigenpair(ref: Reference, lam: float, v: torch.Tensor, scale: float) -> None:
    hv = ref.hvp(v)
    assert float(v @ hv) == pytest.approx(lam, rel=1e-3, abs=1e-4 * scale)
    assert float((hv - lam * v).norm()) <= 2e-2 * scale


def test_hvp(setup):
    member, model, batches, ref = setup
    g = torch.Generator().manual_seed(0)
    v = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    out = _unchanged(model, lambda: curvature.hvp(model, member.loss_fn, batches, vector=v))
    expected = ref.hvp(_flat(v, ref.names))
    torch.testing.assert_close(_flat(out, ref.names), expected, rtol=1e-4, atol=1e-5)


def test_operator_weights_batches_by_size(setup):
    member, model, batches, _ = setup
    whole = list(member.loader(batch_size=len(member.dataset())))
    ragged = list(member.loader(batch_size=20))  # 20, 20, 8
    v = torch.randn(sum(p.numel() for p in model.parameters() if p.requires_grad))
    a = _unchanged(model, lambda: curvature.HessianOperator(model, member.loss_fn, whole).matvec(v))
    b = curvature.HessianOperator(model, member.loss_fn, ragged).matvec(v)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_eigenvalues(setup):
    member, model, batches, ref = setup
    r = _unchanged(
        model,
        lambda: curvature.hessian_eigenvalues(
            model, member.loss_fn, batches, top_k=2, max_iter=80, tol=1e-4, seed=0
        ),
    )
    scale = abs(r.top)
    for lam, vec in zip(r.eigenvalues.tolist(), r.eigenvectors):
        _check_eigenpair(ref, lam, _flat(vec, ref.names), scale)
    if ref.exact:
        expected = torch.linalg.eigvalsh(ref.H).flip(0)[:2]
        assert ((r.eigenvalues - expected).abs() / expected.abs()).max() < 1e-3


def test_directions(setup):
    member, model, batches, ref = setup
    dirs = _unchanged(
        model,
        lambda: curvature.hessian_directions(
            model, member.loss_fn, batches, num_directions=2, max_iter=80, tol=1e-4, seed=0
        ),
    )
    assert [list(d) for d in dirs] == [[n for n, _ in model.named_parameters()]] * 2
    vs = [_flat(d, ref.names) for d in dirs]
    assert abs(float(vs[0] @ vs[1])) < 1e-4
    lams = [float(v @ ref.hvp(v)) for v in vs]
    for lam, v in zip(lams, vs):
        _check_eigenpair(ref, lam, v, abs(lams[0]))


@pytest.mark.parametrize("method", ["krylov-hutch++", "hutch++", "hutchinson"])
def test_trace(setup, method):
    member, model, batches, ref = setup
    r = _unchanged(
        model,
        lambda: curvature.hessian_trace(
            model, member.loss_fn, batches, max_iter=30, seed=0, method=method
        ),
    )
    assert r.method == method and r.matvecs == 30 and r.stderr > 0
    if ref.exact:
        assert abs(r.trace - float(ref.H.trace())) <= 4 * r.stderr


def test_density(setup):
    member, model, batches, ref = setup
    d = _unchanged(
        model,
        lambda: curvature.hessian_density(model, member.loss_fn, batches, num_iter=30, seed=0),
    )
    torch.testing.assert_close(d.weights.sum(dim=1), torch.ones(1, dtype=torch.float64))
    if ref.exact:
        ev = torch.linalg.eigvalsh(ref.H)
        lo, hi = float(ev[0]), float(ev[-1])
        slack = 1e-3 * max(abs(lo), abs(hi))
        assert d.ritz_values.min() >= lo - slack and d.ritz_values.max() <= hi + slack
        assert float(d.ritz_values.max()) == pytest.approx(hi, rel=1e-2)


def test_layerwise(setup):
    member, model, batches, ref = setup
    res = _unchanged(
        model,
        lambda: curvature.layerwise_curvature(
            model, member.loss_fn, batches, max_iter=40, seed=0, trace_samples=10
        ),
    )
    covered = [n for lc in res.values() for n in lc.params]
    assert covered == ref.names
    if ref.exact:
        offsets, start = {}, 0
        for n, p in zip(ref.names, ref.params):
            offsets[n] = torch.arange(start, start + p.numel())
            start += p.numel()
        for lc in res.values():
            idx = torch.cat([offsets[n] for n in lc.params])
            top = float(torch.linalg.eigvalsh(ref.H[idx][:, idx])[-1])
            assert lc.top_eigenvalue == pytest.approx(top, rel=1e-3, abs=1e-6)


def test_registry_members_are_all_covered():
    assert {m.name for m in ZOO} >= {"resnet", "encoder", "causal_lm", "rnn", "hf_style"}
