"""preserved(): everything a perturbation can touch comes back bit-for-bit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from optiscope._internal.restore import ModelSnapshot, RNGState, preserved


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_restores_params_buffers_modes_flags_and_grads_after_error():
    model = _model()
    model.train()
    model[0].weight.requires_grad_(False)
    model(torch.randn(16, 4)).sum().backward()
    before = _state(model)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    storage = model[3].weight.data_ptr()

    with pytest.raises(RuntimeError, match="boom"):
        with preserved(model):
            model.eval()
            model[0].weight.requires_grad_(True)
            for p in model.parameters():
                p.data.mul_(3.0)
                p.grad = None
            model.train()
            model(torch.randn(16, 4))  # updates BatchNorm running statistics
            model[1].num_batches_tracked = torch.tensor(99)  # reassigned, not in place
            raise RuntimeError("boom")

    _assert_same(before, _state(model))
    assert model.training and all(m.training for m in model.modules())
    assert model[0].weight.requires_grad is False
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
    assert model[3].weight.data_ptr() == storage  # restored in place, storage kept


def test_restores_optimizer_and_rng_on_keyboard_interrupt():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(16, 4)).sum().backward()
    opt.step()
    opt_before = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    rng = RNGState.capture()
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    rng.restore()  # rewind, so the draws after the block must repeat `expected`

    with pytest.raises(KeyboardInterrupt):
        with preserved(model, opt, rng=True):
            opt.param_groups[0]["lr"] = 10.0
            opt.step()
            torch.rand(100)
            np.random.rand(5)  # noqa: NPY002
            raise KeyboardInterrupt

    assert opt.param_groups[0]["lr"] == 1e-3
    for k, v in opt_before.items():
        assert torch.equal(opt.state[model[0].weight][k], v)
    got = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_snapshot_can_be_restored_twice():
    model = _model()
    before = _state(model)
    snap = ModelSnapshot.capture(model)
    for _ in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        snap.restore()
        _assert_same(before, _state(model))
