"""Gradient tests against a plain per-sample loop, and every shared quantity against Cockpit.

Cockpit (``cockpit-for-pytorch`` on a BackPACK-extended copy of the same model, same
batches, same SGD) and optiscope must agree where they compute the same thing. Cockpit
indexes by the step the gradient is taken at (0-based, before the update); optiscope
records step ``s`` after ``s`` updates. So for optiscope's step ``s``: GradNorm,
UpdateSize and Alpha (of the step from there) are Cockpit's step ``s - 1``; Distance,
HessMaxEV and the gradient tests (measured on the probe batch at the weights after the
update) Cockpit's step ``s``.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from optiscope.batch_loss import as_batch_loss
from optiscope.instruments import Instruments, gradient_tests
from tests.instruments._helpers import data, mlp, run_loop

STEPS = 4


def _plain_tests(model, X, y, lr):
    """Cockpit's formulas from per-sample gradients computed one sample at a time."""
    rows, losses = [], []
    for i in range(len(X)):
        model.zero_grad()
        loss = F.cross_entropy(model(X[i : i + 1]), y[i : i + 1])
        loss.backward()
        losses.append(loss.item())
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
    model.zero_grad()
    g = torch.stack(rows)
    B, G = len(X), g.mean(0)
    g2 = G @ G
    norm = sum((gi - G) @ (gi - G) for gi in g) / (B - 1) / B / g2
    inner = sum((gi @ G - g2) ** 2 for gi in g) / (B - 1) / B / g2**2
    ortho = sum(((gi - (gi @ G) / g2 * G) ** 2).sum() for gi in g) / (B - 1) / B / g2
    gsnr = (G**2 / ((g**2).mean(0) - G**2 + 1e-5)).mean()
    var = ((g - G) ** 2).sum(0) / (B - 1)  # per coordinate
    mean_sq = sum(gi @ gi for gi in g) / B
    return {
        "norm_test": norm.sqrt(),
        "inner_product_test": inner.sqrt(),
        "orthogonality_test": ortho.sqrt(),
        "gsnr": gsnr,
        "early_stopping": 1 - B * (G**2 / (var + 1e-5)).mean(),
        "cabs": lr * (mean_sq - g2) / (sum(losses) / B),
        "second_moment": mean_sq,
    }


def test_gradient_tests_against_a_plain_loop():
    X, y = data(10)
    model = mlp()
    got = gradient_tests(model, as_batch_loss(F.cross_entropy), (X, y), chunk_size=3, lr=0.3)
    ref = _plain_tests(model, X, y, 0.3)
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        assert float(got[k]) == pytest.approx(float(v), rel=1e-4), k


def _cockpit_run(model, X, y):
    cockpit = pytest.importorskip("cockpit")
    backpack = pytest.importorskip("backpack")
    from cockpit.quantities import (
        CABS,
        Alpha,
        Distance,
        EarlyStopping,
        GradNorm,
        HessMaxEV,
        HessTrace,
        InnerTest,
        MeanGSNR,
        NormTest,
        OrthoTest,
        TICTrace,
        UpdateSize,
    )
    from cockpit.utils.schedules import linear

    model = backpack.extend(model)
    loss_fn = backpack.extend(torch.nn.CrossEntropyLoss())
    individual = torch.nn.CrossEntropyLoss(reduction="none")
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    every = linear(1)
    classes = (GradNorm, Distance, UpdateSize, HessMaxEV, NormTest, InnerTest, OrthoTest, MeanGSNR,
               EarlyStopping, CABS, HessTrace, TICTrace, Alpha)  # fmt: skip
    cp = cockpit.Cockpit(model.parameters(), quantities=[c(every) for c in classes])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(STEPS + 1):
            opt.zero_grad()
            out = model(X)
            loss = loss_fn(out, y)
            info = {
                "batch_size": len(X),
                "individual_losses": individual(out, y),
                "loss": loss,
                "optimizer": opt,
            }
            with cp(step, info=info):
                loss.backward(create_graph=cp.create_graph(step))
            opt.step()
    return cp.get_output()


def test_same_values_as_cockpit():
    X, y = data(16)
    model = mlp()
    ours = copy.deepcopy(model)
    theirs = _cockpit_run(model, X, y)
    opt = torch.optim.SGD(ours.parameters(), lr=0.3)
    inst = Instruments(
        ours,
        opt,
        ["grad_norm", "layers", "distance", "sharpness", "hessian_trace", "grad_tests", "alpha"],
        sharpness_every=1,
        grad_tests_every=1,
        probe_batch=(X, y),
        loss_fn=F.cross_entropy,
        sharpness_iters=30,
        trace_samples=400,
    )
    run_loop(ours, opt, [(X, y)] * STEPS, inst)
    inst.flush()
    h = {k: dict(v) for k, v in inst.history.items()}
    names = [n for n, _ in ours.named_parameters()]
    for s in range(1, STEPS + 1):
        before, after = theirs[s - 1], theirs[s]
        for i, n in enumerate(names):
            assert h[f"layers/{n}/grad_norm"][s] == pytest.approx(before["GradNorm"][i], rel=1e-4)
            assert h[f"layers/{n}/update_norm"][s] == pytest.approx(
                before["UpdateSize"][i], rel=1e-4
            )
            assert h[f"layers/{n}/distance"][s] == pytest.approx(after["Distance"][i], rel=1e-4)
        total = sum(v**2 for v in before["GradNorm"]) ** 0.5
        assert h["grad_norm"][s] == pytest.approx(total, rel=1e-4)
        # Cockpit's power iteration stops at rtol 1e-3 on consecutive values.
        assert h["sharpness"][s] == pytest.approx(float(after["HessMaxEV"]), rel=3e-3)
        for ours_key, their_key in (
            ("norm_test", "NormTest"),
            ("inner_product_test", "InnerTest"),
            ("orthogonality_test", "OrthoTest"),
            ("gsnr", "MeanGSNR"),
            ("early_stopping", "EarlyStopping"),
            ("cabs", "CABS"),
        ):
            assert h[f"grad_tests/{ours_key}"][s] == pytest.approx(after[their_key], rel=1e-3)
        # Cockpit's HessTrace and TICTrace use BackPACK's exact Hessian diagonal; ours is
        # an estimate of the trace, within 4 standard errors, and the TIC with it.
        trace, err = h["hessian_trace"][s], h["hessian_trace/stderr"][s]
        assert err <= 0.05 * abs(trace)
        assert abs(trace - sum(after["HessTrace"])) <= 4 * err
        assert h["tic"][s] == pytest.approx(after["TICTrace"], rel=4 * err / abs(trace))
        # Alpha of the update from step s - 1 (Cockpit keeps it under its start step; the
        # same batch at both ends, so Cockpit's training batches are optiscope's probe).
        assert h["alpha"][s] + 1 == pytest.approx(before["Alpha"] + 1, rel=1e-4)
