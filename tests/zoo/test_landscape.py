"""Landscape line, plane and trajectory on every zoo member, against a brute-force loop.

The reference sets the weights point by point and evaluates ``as_batch_loss(loss_fn)``
batch by batch (sample-weighted mean), so it shares nothing with the engine but the
BatchLoss and the accuracy rules.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optiscope import landscape as L
from optiscope._internal.accuracy import count_correct, infer_task
from optiscope.batch_loss import TargetLoss, as_batch_loss, logits_of
from tests.zoo._registry import ZooMember


def _batches(member: ZooMember, kind: str):
    """``(data, targets)`` for the engine and the same batches as a list for the loop."""
    if kind == "tensors":
        t = member.tensors()
        if t is None:
            pytest.skip(f"{member.name} has no (inputs, targets) tensor form")
        return t, [t]
    loader = member.loader()
    return (loader, None), list(loader)


def _grid(dirs, coefs):
    return [{n: sum(float(c) * d[n] for c, d in zip(row, dirs) if n in d) for n in dirs[0]}
            for row in coefs]  # fmt: skip


def brute_force(model, loss_fn, batches, dirs, coefs, accuracy=False):
    """Set the weights, walk the batches, average by BatchLoss.size; put everything back."""
    bl = as_batch_loss(loss_fn)
    params = dict(model.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    out = []
    model.eval()
    with torch.no_grad():
        for row in coefs:
            for n, p in params.items():
                new = base[n].clone()
                for c, d in zip(row, dirs):
                    if n in d:
                        new = new + float(c) * d[n]
                p.copy_(new)
            num = den = 0.0
            for b in batches:
                ev = bl.evaluate(model, b)
                if accuracy:
                    pred = logits_of(ev.output)
                    lf = bl.loss_fn if isinstance(bl, TargetLoss) else None
                    c, s = count_correct(pred, ev.target, infer_task(lf, pred, ev.target))
                    num, den = num + int(c), den + int(s)
                else:
                    num, den = num + float(ev.loss) * bl.size(b), den + bl.size(b)
            out.append(num / den)
    model.load_state_dict(state)
    model.train(was_training)
    return np.array(out)


def snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
    }


def assert_same(a, b):
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
        assert a["state"][k].dtype == b["state"][k].dtype, k
    assert a["requires_grad"] == b["requires_grad"]
    assert a["modes"] == b["modes"]


@pytest.mark.parametrize("kind", ["tensors", "loader"])
def test_line_equals_brute_force(member, kind):
    model = member.model()
    (data, targets), batches = _batches(member, kind)
    d = L.random_direction(model, seed=1)
    ls = L.line(
        model, member.loss_fn, data, targets, direction=d, alpha_range=(-0.5, 0.5),
        num_points=5, progress=False,
    )  # fmt: skip
    ref = brute_force(model, member.loss_fn, batches, [d], ls.alphas[:, None])
    np.testing.assert_allclose(ls.loss, ref, rtol=1e-5, atol=1e-6)
    assert ls.metadata["num_samples"] == sum(as_batch_loss(member.loss_fn).size(b) for b in batches)


@pytest.mark.parametrize("kind", ["tensors", "loader"])
def test_plane_equals_brute_force(member, kind):
    model = member.model()
    (data, targets), batches = _batches(member, kind)
    d1, d2 = L.random_directions(model, 2, seed=2)
    ls = L.plane(
        model, member.loss_fn, data, targets, d1=d1, d2=d2, alpha_range=(-0.4, 0.6),
        beta_range=(-0.3, 0.2), num_points=(3, 2), progress=False,
    )  # fmt: skip
    aa, bb = np.meshgrid(ls.alphas, ls.betas, indexing="ij")
    coefs = np.stack([aa.ravel(), bb.ravel()], axis=1)
    ref = brute_force(model, member.loss_fn, batches, [d1, d2], coefs)
    np.testing.assert_allclose(ls.loss, ref.reshape(3, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["walk", "auto"])
def test_accuracy_or_a_clear_error(member, method):
    model = member.model()
    loader = member.loader()
    d = L.random_direction(model, seed=3)
    kw = {"direction": d, "num_points": 3, "metrics": ("loss", "accuracy"), "method": method}
    if member.task == "regression":
        with pytest.raises(ValueError, match="'accuracy' cannot be computed: this is a regression"):
            L.line(model, member.loss_fn, loader, progress=False, **kw)
        return
    ls = L.line(model, member.loss_fn, loader, progress=False, **kw)
    ref = brute_force(model, member.loss_fn, list(loader), [d], ls.alphas[:, None], True)
    np.testing.assert_allclose(ls["accuracy"], ref, rtol=0, atol=1e-12)


def test_trajectory_plane_equals_brute_force(member):
    model = member.model()
    bl = as_batch_loss(member.loss_fn)
    batches = list(member.loader())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    states = []
    for b in batches * 2:
        opt.zero_grad()
        bl(model, b).backward()
        opt.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    final = states[-1]
    p1, p2, explained = L.pca_directions(final, states[:-1])
    coords = L.project_trajectory(final, states, p1, p2)
    np.testing.assert_allclose(coords[-1], 0.0, atol=1e-6)
    assert explained[0] >= explained[1] >= 0
    reach = float(np.abs(coords).max()) * 1.2 + 1e-3
    ls = L.plane(
        model, member.loss_fn, batches, d1=p1, d2=p2, alpha_range=(-reach, reach),
        num_points=3, progress=False,
    )  # fmt: skip
    aa, bb = np.meshgrid(ls.alphas, ls.betas, indexing="ij")
    coefs = np.stack([aa.ravel(), bb.ravel()], axis=1)
    ref = brute_force(model, member.loss_fn, batches, [p1, p2], coefs)
    np.testing.assert_allclose(ls.loss, ref.reshape(3, 3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_model_left_bit_for_bit_as_it_was(member, train):
    model = member.model()
    model.train()
    first = next(iter(model.parameters()))
    first.requires_grad_(False)
    # A forward in train mode moves BatchNorm running statistics off their init values.
    with torch.no_grad():
        as_batch_loss(member.loss_fn)(model, member.batch())
    before = snapshot(model)
    d1, d2 = L.random_directions(model, 2, seed=4)
    L.plane(model, member.loss_fn, member.loader(), d1=d1, d2=d2, num_points=2,
            train=train, progress=False)  # fmt: skip
    L.line(model, member.loss_fn, member.loader(), direction=d1, num_points=3, train=train,
           method="walk", progress=False)  # fmt: skip
    assert_same(before, snapshot(model))


def test_same_inputs_same_bits(member):
    model = member.model()
    d1, d2 = L.random_directions(model, 2, seed=5)
    runs = [
        L.plane(
            model, member.loss_fn, member.loader(), d1=d1, d2=d2, num_points=3, progress=False
        )  # fmt: skip
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].loss, runs[1].loss)
    assert runs[0].metadata["method"] == runs[1].metadata["method"]
