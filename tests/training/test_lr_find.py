"""LR range test: the schedule of learning rates, the smoothing, the suggestion, restore."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope import AdvancedTrainer, LRFindResult, lr_find


def _state(model, opt):
    return (
        [p.detach().clone() for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
        copy.deepcopy(opt.state_dict()),
    )


def _trained_adam(make_model, make_loaders):
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train, _ = make_loaders(32)
    for x, y in list(train)[:3]:  # some optimizer state worth restoring
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()  # a mode to restore, too
    return model, opt, train


def test_values_and_restore(make_model, make_loaders):
    model, opt, train = _trained_adam(make_model, make_loaders)
    params, buffers, opt_state = _state(model, opt)
    torch.manual_seed(5)
    random.seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    res = lr_find(
        model, opt, torch.nn.CrossEntropyLoss(), train, start_lr=1e-5, end_lr=1.0, num_iter=25
    )
    assert isinstance(res, LRFindResult)
    # Restored exactly: parameters, mode, optimizer state (lr, moments, step), RNG.
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert not model.training
    assert opt.param_groups[0]["lr"] == 1e-3
    saved = opt.state_dict()["state"]
    for k, v in opt_state["state"].items():
        assert all(torch.equal(v[n], saved[k][n]) for n in v)
    assert torch.equal(torch.rand(3), expected_next)
    # Geometric learning rates from start to end.
    n = len(res.lrs)
    ref_lrs = [1e-5 * (1.0 / 1e-5) ** (i / 24) for i in range(n)]
    assert res.lrs == pytest.approx(ref_lrs, rel=1e-12)
    # Debiased exponential smoothing of the raw losses.
    avg, ref = 0.0, []
    for i, v in enumerate(res.raw_losses):
        avg = 0.98 * avg + 0.02 * v
        ref.append(avg / (1 - 0.98 ** (i + 1)))
    assert res.losses == pytest.approx(ref, rel=1e-12)
    assert res.losses[0] == pytest.approx(res.raw_losses[0])
    i_min = int(np.argmin(res.losses))
    assert res.suggestion_min == pytest.approx(res.lrs[i_min] / 10)


def test_suggestion_is_steepest_descent_per_log_lr():
    from optiscope.training._lr_find import _suggest

    lrs = list(np.logspace(-5, 0, 50))
    # A sigmoid in log-lr that falls fastest at 1e-3, then rises after 1e-1.
    x = np.log10(lrs)
    losses = list(2.0 - 1.0 / (1 + np.exp(-4 * (x + 3))) + np.where(x > -1, (x + 1) ** 2, 0))
    steep, at_min = _suggest(lrs, losses, "exp")
    assert abs(math.log10(steep) + 3) < 0.11
    assert at_min == pytest.approx(lrs[int(np.argmin(losses))] / 10)


def test_stops_when_the_loss_diverges(make_model, make_loaders):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train, _ = make_loaders(32)
    res = lr_find(
        model, opt, torch.nn.CrossEntropyLoss(), train, start_lr=1e-3, end_lr=1e6, num_iter=60
    )
    assert res.diverged and len(res.lrs) < 60
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_restores_on_error(make_model, make_loaders):
    model, opt, train = _trained_adam(make_model, make_loaders)
    params, _, _ = _state(model, opt)
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return torch.nn.functional.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        lr_find(model, opt, loss_fn, train, num_iter=10)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert opt.param_groups[0]["lr"] == 1e-3


def test_trainer_method_and_plot(make_model, make_loaders, tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train, _ = make_loaders(32)
    t = AdvancedTrainer(model, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    res = t.lr_find(train, num_iter=40, mode="linear", start_lr=1e-4, end_lr=2.0)
    assert res.lrs[1] - res.lrs[0] == pytest.approx((2.0 - 1e-4) / 39)
    fig = res.plot(path=tmp_path / "lr.png")
    assert (tmp_path / "lr.png").exists() and fig.axes[0].get_xscale() == "linear"
    assert t.global_step == 0 and opt.param_groups[0]["lr"] == 0.1


@settings(max_examples=25, deadline=None)
@given(
    start=st.floats(-10, 10),
    end=st.floats(-10, 100),
    num_iter=st.integers(-3, 3),
    mode=st.sampled_from(["exp", "linear", "cos", ""]),
)
def test_bad_arguments_are_value_errors(start, end, num_iter, mode):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 2), torch.randint(0, 2, (4,)))]
    ok = start > 0 and end > start and num_iter >= 2 and mode in ("exp", "linear")
    if ok:
        res = lr_find(model, opt, torch.nn.CrossEntropyLoss(), data, start, end, num_iter, mode)
        assert len(res.lrs) <= num_iter
    else:
        with pytest.raises(ValueError):
            lr_find(model, opt, torch.nn.CrossEntropyLoss(), data, start, end, num_iter, mode)


def test_empty_loader_is_a_value_error():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        lr_find(model, opt, torch.nn.CrossEntropyLoss(), [], num_iter=5)
