"""Loss, gradient norm, per-layer norms, update ratios and distance against plain code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from optiscope.instruments import Instruments
from tests.instruments._helpers import data, mlp, run_loop


def _reference(model, opt, batches, every):
    """A hand-written loop that records every quantity with plain per-tensor code."""
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    out: dict[str, list[tuple[int, float]]] = {}

    def put(key, step, value):
        out.setdefault(key, []).append((step, float(value)))

    for step, (x, y) in enumerate(batches, start=1):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        opt.zero_grad()
        if step % every:
            continue
        put("loss", step, loss.detach())
        put("grad_norm", step, torch.sqrt(sum(g.pow(2).sum() for g in grads.values())))
        total_u = total_w = total_d = 0.0
        for n, p in model.named_parameters():
            u = (p.detach() - before[n]).norm()
            w = p.detach().norm()  # the weights after the step
            d = (p.detach() - init[n]).norm()
            put(f"layers/{n}/grad_norm", step, grads[n].norm())
            put(f"layers/{n}/weight_norm", step, w)
            put(f"layers/{n}/update_norm", step, u)
            put(f"layers/{n}/update_ratio", step, u / w if w > 0 else math.nan)
            put(f"layers/{n}/distance", step, d)
            total_u, total_w, total_d = total_u + u**2, total_w + w**2, total_d + d**2
        put("update_norm", step, math.sqrt(total_u))
        put("update_ratio", step, math.sqrt(total_u) / math.sqrt(total_w))
        put("distance", step, math.sqrt(total_d))
    return out


@pytest.mark.parametrize("optim", ["sgd_momentum", "adamw"])
@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("before_step", [True, False])
def test_against_plain_reference(optim, every, before_step):
    X, y = data(48)
    batches = [(X[i : i + 8], y[i : i + 8]) for i in range(0, 48, 8)]

    def make():
        m = mlp()
        torch.nn.init.zeros_(m[2].bias)  # a zero weight norm: its ratio is NaN
        if optim == "sgd_momentum":
            return m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        return m, torch.optim.AdamW(m.parameters(), lr=0.01)

    m_ref, o_ref = make()
    ref = _reference(m_ref, o_ref, batches, every)
    m, o = make()
    inst = Instruments(m, o, every=every)
    run_loop(m, o, batches, inst, before_step=before_step)
    inst.flush()
    for key, pairs in ref.items():
        got = inst.history[key]
        assert [s for s, _ in got] == [s for s, _ in pairs], key
        for (_, a), (_, b) in zip(got, pairs):
            if math.isnan(b):
                assert math.isnan(a), key
            else:
                assert a == pytest.approx(b, rel=1e-5, abs=1e-7), key
    # The instruments leave training as it was: same weights, bit for bit.
    for p, q in zip(m.parameters(), m_ref.parameters()):
        assert torch.equal(p, q)


def test_values_stay_on_device_until_values(host_syncs):
    X, y = data(64)
    batches = [(X[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    inst = Instruments(m, opt, quantities=["loss", "grad_norm", "layers", "distance"])
    with host_syncs() as counts:
        run_loop(m, opt, batches, inst)
    assert sum(counts.values()) == 0
    assert len(inst._rec.pending) == 8 and inst.history == {}
    with host_syncs() as counts:
        v = inst.values()
    assert counts["tolist"] == 1 and sum(counts.values()) == 1  # the one copy
    assert len(inst.history["loss"]) == 8 and v["loss"] == inst.history["loss"][-1][1]
    assert isinstance(v["layers/0.weight/update_ratio"], float)


def test_incremental_distance_stays_exact_over_many_steps():
    X, y = data(8)
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
    init = [p.detach().clone() for p in m.parameters()]
    inst = Instruments(m, opt, ["distance"])
    direct = []

    def record(_step):
        pairs = zip(m.parameters(), init)
        direct.append(math.sqrt(sum(float((p.detach() - q).pow(2).sum()) for p, q in pairs)))

    run_loop(m, opt, [(X, y)] * 150, inst, hook=record)
    inst.flush()
    got = [v for _, v in inst.history["distance"]]
    assert got == pytest.approx(direct, rel=1e-5)


def test_noise_and_layers_without_host_sync_under_accumulation(host_syncs):
    X, y = data(64)
    batches = [(X[i : i + 4], y[i : i + 4]) for i in range(0, 64, 4)]
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    inst = Instruments(
        m, opt, ["loss", "grad_norm", "layers", "distance", "noise_scale"], accumulation_steps=4
    )
    with host_syncs() as counts:
        run_loop(m, opt, batches, inst, accum=4)
        inst.flush()
    assert counts["tolist"] == 1 and sum(counts.values()) == 1
    assert len(inst.history["noise_scale"]) == 4


def test_grad_norms_are_read_at_before_step():
    """Zeroing the gradients in place before after_step() does not change what was read."""
    X, y = data(8)
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    inst = Instruments(m, opt, ["grad_norm"])
    F.cross_entropy(m(X), y).backward()
    expected = torch.nn.utils.clip_grad_norm_(m.parameters(), float("inf")).item()
    inst.before_step()
    opt.step()
    opt.zero_grad(set_to_none=False)
    inst.after_step()
    assert inst.values()["grad_norm"] == pytest.approx(expected, rel=1e-6)
