"""The instruments on every zoo member (attention, BatchNorm, RNNs, dict batches, ...).

References: the global gradient norm against ``torch.nn.utils.clip_grad_norm_``; the
sharpness eigenpair against the plain-autograd float64 Hessian-vector product of
``test_curvature.Reference`` (Rayleigh quotient and residual); the gradient tests against
per-sample gradients from a plain loop of single-sample backward passes, and alpha against
Cockpit's fit on the same loop's per-sample slopes. Every probe must leave the model
bit-for-bit as it was.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from optiscope.batch_loss import as_batch_loss
from optiscope.instruments import QUANTITIES, Instruments
from tests.curvature._reference import assert_same_state, state_of
from tests.instruments._helpers import one_sample, plain_alpha
from tests.zoo._registry import ZooMember
from tests.zoo.test_curvature import Reference


def _plain_norm_test(model, bl, batch):
    ref = copy.deepcopy(model).eval()
    params = [p for p in ref.parameters() if p.requires_grad]
    rows = []
    for i in range(bl.size(batch)):
        g = torch.autograd.grad(bl(ref, one_sample(batch, i)), params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if gi is None else gi).reshape(-1)
                    for gi, p in zip(g, params)
                ]
            ).double()
        )
    g = torch.stack(rows)
    B, G = g.shape[0], g.mean(0)
    return ((((g - G) ** 2).sum() / (B - 1) / B / (G @ G)).sqrt()).item()


def test_every_quantity_on_every_member(member: ZooMember):
    model = member.model()
    model.train()
    batch = member.batch()
    bl = as_batch_loss(member.loss_fn)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inst = Instruments(
        model,
        opt,
        QUANTITIES,
        sharpness_every=2,
        grad_tests_every=2,
        probe_batch=batch,
        loss_fn=member.loss_fn,
        noise_source="split",
        sharpness_iters=10,
    )
    norms = []
    for _ in range(2):
        loss = bl(model, batch)
        loss.backward()
        inst.after_backward(loss, batch_size=bl.size(batch))
        inst.before_step()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item())
        opt.step()
        inst.after_step()
        opt.zero_grad()
    v = inst.values()
    # Probes again (the step-2 set) on a model in train mode with gradients: nothing changes.
    before, rng = state_of(model), torch.get_rng_state()
    inst._run_probes(2)
    assert_same_state(state_of(model), before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [x for _, x in inst.history["grad_norm"]] == pytest.approx(norms, rel=1e-5)
    # The eigenpair under an independent float64 Hessian-vector product.
    ref = Reference(member, model, [batch])
    vec = inst._probe.sharpness.vector.double()
    hv = ref.hvp(vec)
    lam = v["sharpness"]
    assert (vec @ hv).item() == pytest.approx(lam, rel=2e-3)
    assert (hv - lam * vec).norm().item() <= 0.1 * abs(lam) + 1e-6
    assert v["grad_tests/norm_test"] == pytest.approx(_plain_norm_test(model, bl, batch), rel=1e-3)
    before_step = inst._alpha.of(2)
    alpha = plain_alpha(model, bl, batch, before_step)
    # Adam's small steps land near -1: compare the distance from it.
    assert v["alpha"] + 1 == pytest.approx(alpha + 1, rel=1e-3, abs=1e-6)
    assert v["preconditioned_sharpness"] > 0 and v["noise_scale/trace"] > 0
    # The trace's exact low-rank part: tr(Q^T H Q) of the sharpness basis, by the
    # independent float64 products.
    Q, low_rank = inst._probe.sharpness.sketch()
    exact_part = sum((q.double() @ ref.hvp(q.double())).item() for q in Q)
    assert low_rank == pytest.approx(exact_part, rel=2e-3, abs=1e-6)
    assert v["hessian_trace/stderr"] >= 0 and math.isfinite(v["hessian_trace"])
