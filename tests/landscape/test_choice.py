"""The evaluation method is a fixed rule: which method each kind of model gets, and why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optiscope import landscape as L
from optiscope.batch_loss import FunctionLoss
from optiscope.data import digits_tensors
from optiscope.models import digits_cnn, digits_mlp

from .conftest import brute_force

CE = nn.CrossEntropyLoss()


def _meta(model, loss_fn, X, y, **kw):
    d1, d2 = L.random_directions(model, 2, seed=0)
    ls = L.plane(model, loss_fn, X, y, d1=d1, d2=d2, num_points=2, progress=False, **kw)
    return ls.metadata["method"], ls.metadata["first_layer"]


def _guide():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
    X = torch.randn(100, 2)
    return model, nn.BCEWithLogitsLoss(), X, (X.sum(1, keepdim=True) > 0).float()


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


class TestRule:
    def test_the_benchmark_cases(self):
        # The picks bench_landscape.py measured fastest: vmap with the algebra on the guide's
        # net; the walk on the digits MLP (with the algebra: fan-in 64 >= 16 * 3) and on
        # the CNN (without: fan-in 9).
        assert _meta(*_guide()) == ("vmap", True)
        X, y = digits_tensors()
        assert _meta(digits_mlp(), CE, X, y) == ("walk", True)
        assert _meta(digits_cnn(8), CE, X.view(-1, 1, 8, 8), y) == ("walk", False)

    def test_small_batches_of_a_plain_sequential_take_vmap(self):
        X, y = digits_tensors()
        assert _meta(digits_cnn(8), CE, X[:16].view(-1, 1, 8, 8), y[:16])[0] == "vmap"

    def test_custom_forward_and_train_mode_take_the_walk(self):
        torch.manual_seed(0)
        X, y = torch.randn(8, 5, 4), torch.randint(0, 3, (8,))
        # nn.LSTM has no vmap batching rule; a custom forward is never vmapped by the rule.
        assert _meta(Recurrent(), CE, X, y) == ("walk", False)
        assert _meta(*_guide(), train=True) == ("walk", False)

    def test_a_hooked_model_takes_the_walk_without_the_algebra(self):
        model, lf, X, y = _guide()
        model.register_forward_hook(lambda m, i, o: o * 2)
        assert _meta(model, lf, X, y) == ("walk", False)

    def test_the_same_pick_whatever_the_clock_says(self, monkeypatch):
        import time

        ticks = iter(np.random.default_rng(0).exponential(size=10_000).cumsum())
        monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
        picks = {_meta(*_guide()) for _ in range(3)}
        assert picks == {("vmap", True)}


def test_vmap_bits_do_not_depend_on_the_chunking():
    # DDP shards cut the grid differently from one process; a point must not notice.
    model, lf, X, y = _guide()
    d1, d2 = L.random_directions(model, 2, seed=1)
    runs = [
        L.plane(
            model,
            lf,
            X,
            y,
            d1=d1,
            d2=d2,
            num_points=(5, 3),
            method="vmap",
            chunk_size=c,
            progress=False,
        ).loss  # fmt: skip
        for c in (None, 1, 2, 4, 7)
    ]
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


class TestFirstLayerAlgebra:
    def test_not_used_with_a_function_loss(self):
        model, _, X, y = _guide()
        fl = FunctionLoss(lambda m, b: F.binary_cross_entropy_with_logits(m(b[0]), b[1]))
        d = L.random_direction(model, seed=0)
        ls = L.line(model, fl, X, y, direction=d, num_points=5, progress=False)
        assert ls.metadata["first_layer"] is False
        ref = brute_force(model, nn.BCEWithLogitsLoss(), X, y, [d], ls.alphas[:, None])
        np.testing.assert_allclose(ls.loss, ref, rtol=1e-5, atol=1e-7)
        with pytest.raises(ValueError, match="first_layer=True needs"):
            L.line(model, fl, X, y, direction=d, num_points=3, first_layer=True)

    def test_metrics_beyond_the_loss_need_the_output(self):
        model, _, X, y = _guide()
        fl = FunctionLoss(lambda m, b: F.binary_cross_entropy_with_logits(m(b[0]), b[1]))
        with pytest.raises(ValueError, match="FunctionLoss"):
            L.line(model, fl, X, y, direction=L.random_direction(model, seed=0),
                   num_points=3, metrics=("loss", "accuracy"))  # fmt: skip

    @pytest.mark.parametrize("method", ["vmap", "walk"])
    def test_forced_algebra_equals_the_plain_evaluation(self, method):
        X, y = digits_tensors()
        model = digits_mlp()
        d1, d2 = L.random_directions(model, 2, seed=2)
        kw = {"d1": d1, "d2": d2, "num_points": 3, "method": method, "progress": False}
        a = L.plane(model, CE, X[:200], y[:200], first_layer=True, **kw)
        b = L.plane(model, CE, X[:200], y[:200], first_layer=False, **kw)
        assert a.metadata["first_layer"] and not b.metadata["first_layer"]
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
