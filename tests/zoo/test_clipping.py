"""Every clipper on every zoo member's real gradients, against a plain reference.

Norm and value clipping are compared with torch's own functions (bit for bit), AGC with
timm's unit-wise rule written out, AutoClip with ``numpy.percentile`` over the norms seen
so far, ZClip with its EMA recursion in Python floats. Six optimizer steps per member,
so the adaptive clippers get past their warm-up and their ring buffer wraps; the
fifth step's loss is tripled (a spike).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optiscope import AGC, AutoClip, NormClip, ValueClip, ZClip
from optiscope.batch_loss import as_batch_loss

STEPS = 6


def _leaf_copies(params):
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_(True)
        q.grad = p.grad.detach().clone()
        out.append(q)
    return out


def _norm(grads) -> float:
    return float(torch.nn.utils.get_total_norm(grads))


def _norm_ref(state):
    def ref(qs):
        return torch.nn.utils.clip_grad_norm_(qs, 0.05)

    return ref


def _value_ref(state):
    def ref(qs):
        torch.nn.utils.clip_grad_value_(qs, 1e-3)

    return ref


def _unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    if x.ndim <= 1:
        return x.norm(2.0)
    return x.norm(2.0, dim=tuple(range(1, x.ndim)), keepdim=True)


def _agc_ref(state):
    def ref(qs):  # timm.utils.agc.adaptive_clip_grad, written out
        for q in qs:
            max_norm = _unitwise_norm(q.detach()).clamp_(min=1e-3).mul_(0.01)
            grad_norm = _unitwise_norm(q.grad)
            clipped = q.grad * (max_norm / grad_norm.clamp(min=1e-6))
            q.grad.copy_(torch.where(grad_norm < max_norm, q.grad, clipped))

    return ref


def _autoclip_ref(state):
    state["norms"] = []

    def ref(qs):
        norm = _norm([q.grad for q in qs])
        state["norms"] = (state["norms"] + [norm])[-4:]
        limit = float(np.percentile(state["norms"], 50))
        torch.nn.utils.clip_grad_norm_(qs, limit)

    return ref


def _zclip_ref(state):
    alpha, z_thresh, warmup = 0.5, 1.0, 2
    state.update(calls=0, seen=[], mean=None, var=None)

    def ref(qs):
        g = _norm([q.grad for q in qs])
        if state["calls"] < warmup:
            state["seen"].append(g)
            if len(state["seen"]) == warmup:
                state["mean"] = float(np.mean(state["seen"]))
                state["var"] = float(np.var(state["seen"]))
            limit = math.inf
        else:
            mean, std = state["mean"], math.sqrt(state["var"])
            z = (g - mean) / (std + 1e-6)
            limit = mean + z_thresh**2 * std / z if z > z_thresh else math.inf
            v = min(g, limit)
            state["mean"] = alpha * mean + (1 - alpha) * v
            state["var"] = alpha * state["var"] + (1 - alpha) * (v - state["mean"]) ** 2
        state["calls"] += 1
        state.setdefault("limits", []).append(limit)
        if math.isfinite(limit):
            torch.nn.utils.clip_grad_norm_(qs, limit)

    return ref


CASES = {
    "norm": (lambda: NormClip(0.05), _norm_ref, 0.0),
    "value": (lambda: ValueClip(1e-3), _value_ref, 0.0),
    "agc": (lambda: AGC(clip_factor=0.01, eps=1e-3), _agc_ref, 1e-6),
    "autoclip": (lambda: AutoClip(percentile=50, history_size=4), _autoclip_ref, 1e-5),
    "zclip": (
        lambda: ZClip(alpha=0.5, z_thresh=1.0, warmup_steps=2, max_grad_norm=None),
        _zclip_ref,
        1e-5,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_clipper_matches_reference_on_real_gradients(member, name):
    make_clipper, make_ref, rtol = CASES[name]
    clipper, state = make_clipper(), {}
    ref = make_ref(state)
    model = member.model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05)
    bl = as_batch_loss(member.loss_fn)
    batches = list(member.loader())
    changed = 0
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        spike = 3.0 if step == 4 else 1.0  # a loss spike, what adaptive clippers are for
        (spike * bl(model, batches[step % len(batches)])).backward()
        before = [p.grad.detach().clone() for p in params]
        expected = _leaf_copies(params)
        ref(expected)
        result = clipper(params)
        for p, q in zip(params, expected):
            if rtol == 0.0:
                assert torch.equal(p.grad, q.grad), (name, step)
            else:
                torch.testing.assert_close(p.grad, q.grad, rtol=rtol, atol=1e-9)
        assert float(result.total_norm) == pytest.approx(_norm(before), rel=1e-5)
        assert float(result.clipped_norm) == pytest.approx(
            _norm([p.grad for p in params]), rel=1e-4
        )
        did_change = any(not torch.equal(a, p.grad) for a, p in zip(before, params))
        assert bool(result.clipped) == did_change and not bool(result.nonfinite)
        changed += did_change
        opt.step()
    # Each case clips on these gradients at least once, so the comparison is not vacuous.
    assert changed >= 1
