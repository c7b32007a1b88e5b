from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optiscope import landscape as L

from .conftest import assert_same_state, brute_force, cnn_with_bn, mlp_with_dropout, state_of

CE = nn.CrossEntropyLoss()


def _models(digits):
    X, y = digits
    return [
        ("mlp_dropout", mlp_with_dropout(), X),
        ("cnn_bn", cnn_with_bn(), X.view(-1, 1, 8, 8)),
    ]


@pytest.mark.parametrize("method", ["vmap", "walk"])
@pytest.mark.parametrize("first_layer", [False, True])
def test_plane_equals_brute_force(digits, method, first_layer):
    for _, model, X in _models(digits):
        y = digits[1]
        d1, d2 = L.random_directions(model, 2, seed=1)
        ls = L.plane(
            model,
            CE,
            X,
            y,
            d1=d1,
            d2=d2,
            alpha_range=(-0.8, 0.6),
            beta_range=(-0.5, 1.0),
            num_points=(5, 4),
            method=method,
            first_layer=first_layer,
        )
        aa, bb = np.meshgrid(ls.alphas, ls.betas, indexing="ij")
        ref = brute_force(model, CE, X, y, [d1, d2], np.stack([aa.ravel(), bb.ravel()], 1))
        assert ls.loss.shape == (5, 4)
        np.testing.assert_allclose(ls.loss, ref.reshape(5, 4), rtol=2e-5, atol=2e-6)
        # values[i, j] is at (alphas[i], betas[j]): row 0 runs along beta at alpha=-0.8.
        assert ls.alphas[0] == -0.8 and ls.betas[-1] == 1.0
        assert ls.metadata["method"] == method


@pytest.mark.parametrize("method", ["vmap", "walk", "auto"])
def test_line_equals_brute_force_with_accuracy(digits, method):
    for _, model, X in _models(digits):
        y = digits[1]
        d = L.random_direction(model, seed=2)
        ls = L.line(
            model, CE, X, y, direction=d, num_points=7, metrics=("loss", "accuracy"), method=method
        )
        ref = brute_force(model, CE, X, y, [d], ls.alphas[:, None])
        np.testing.assert_allclose(ls.loss, ref, rtol=2e-5, atol=2e-6)
        acc = brute_force(
            model, lambda o, t: (o.argmax(1) == t).float().mean(), X, y, [d], ls.alphas[:, None]
        )
        np.testing.assert_allclose(ls["accuracy"], acc, atol=1e-6)


def test_auto_over_batches_equals_brute_force(digits):
    # auto measures on the first batch and keeps the probe's values: check they land on
    # the right grid points, and that later batches add up with the right weights.
    X, y = digits
    for _, model, Xm in _models(digits):
        loader = DataLoader(TensorDataset(Xm, y), batch_size=100)
        d1, d2 = L.random_directions(model, 2, seed=3)
        ls = L.plane(model, CE, loader, d1=d1, d2=d2, num_points=5, progress=False)
        aa, bb = np.meshgrid(ls.alphas, ls.betas, indexing="ij")
        ref = brute_force(model, CE, Xm, y, [d1, d2], np.stack([aa.ravel(), bb.ravel()], 1))
        np.testing.assert_allclose(ls.loss, ref.reshape(5, 5), rtol=2e-5, atol=2e-6)
        assert ls.metadata["method"] in ("vmap", "walk")
        assert isinstance(ls.metadata["first_layer"], bool)


def test_vmap_and_walk_agree_on_a_larger_grid(digits):
    X, y = digits
    model = mlp_with_dropout()
    d1, d2 = L.random_directions(model, 2, seed=0)
    v = L.plane(model, CE, X, y, d1=d1, d2=d2, num_points=11, method="vmap").loss
    w = L.plane(model, CE, X, y, d1=d1, d2=d2, num_points=11, method="walk", first_layer=False).loss
    np.testing.assert_allclose(v, w, rtol=1e-5, atol=1e-6)


def test_dataloader_is_the_sample_weighted_mean(digits):
    X, y = digits
    model = mlp_with_dropout()
    d = L.random_direction(model, seed=0)
    # 240 samples in batches of 70: the last batch has 30, so a plain mean of batch means
    # would be wrong.
    loader = DataLoader(TensorDataset(X, y), batch_size=70)
    full = L.line(model, CE, X, y, direction=d, num_points=5)
    batched = L.line(model, CE, loader, direction=d, num_points=5)
    np.testing.assert_allclose(batched.loss, full.loss, rtol=1e-5)
    assert batched.metadata["num_samples"] == 240 and batched.metadata["num_batches"] == 4
    first = L.line(model, CE, loader, direction=d, num_points=5, max_batches=1)
    ref = L.line(model, CE, X[:70], y[:70], direction=d, num_points=5)
    np.testing.assert_allclose(first.loss, ref.loss, rtol=1e-6)


def test_eval_mode_reads_running_stats_and_train_mode_is_restored(digits):
    X, y = digits
    model = cnn_with_bn()
    model.train()
    before = state_of(model)
    d = L.random_direction(model, seed=0)
    ls = L.line(model, CE, X.view(-1, 1, 8, 8), y, direction=d, num_points=3)
    assert_same_state(before, state_of(model))
    model.eval()
    with torch.no_grad():
        centre = float(CE(model(X.view(-1, 1, 8, 8)), y))
    model.train()
    assert ls.loss[1] == pytest.approx(centre, rel=1e-5)
    # train=True uses batch statistics (different values) and still restores everything.
    tr = L.line(model, CE, X.view(-1, 1, 8, 8), y, direction=d, num_points=3, train=True)
    assert tr.metadata["method"] == "walk"
    assert abs(tr.loss[1] - centre) > 1e-4
    assert_same_state(before, state_of(model))


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("method", ["vmap", "walk"])
def test_restored_after_an_exception_in_loss_fn(digits, exc, method):
    X, y = digits
    model = cnn_with_bn()
    model.train()
    model(X.view(-1, 1, 8, 8)[:16]).sum().backward()  # real grads to keep
    model[0].weight.requires_grad_(False)
    before = state_of(model)
    calls = {"n": 0}

    def loss_fn(out, t):
        calls["n"] += 1
        if calls["n"] == 3:
            raise exc("injected")
        return CE(out, t)

    d1, d2 = L.random_directions(model, 2, seed=0)
    with pytest.raises(exc):
        L.plane(
            model,
            loss_fn,
            X.view(-1, 1, 8, 8),
            y,
            d1=d1,
            d2=d2,
            num_points=4,
            method=method,
            chunk_size=1,
        )
    assert_same_state(before, state_of(model))


def test_direction_subset_and_curvature_style_dict(digits):
    X, y = digits
    model = mlp_with_dropout()
    # A plain dict covering one parameter (as curvature.hessian_directions may return).
    d = {"3.weight": torch.randn(12, 24)}
    ls = L.line(model, CE, X, y, direction=d, num_points=5)
    ref = brute_force(model, CE, X, y, [d], ls.alphas[:, None])
    np.testing.assert_allclose(ls.loss, ref, rtol=2e-5)


def test_custom_metric_callable_and_dict(digits):
    X, y = digits
    model = mlp_with_dropout()
    d = L.random_direction(model, seed=0)

    def mean_logit(out, t):
        return out.mean()

    ls = L.line(model, CE, X, y, direction=d, num_points=3, metrics=[mean_logit])
    ref = brute_force(model, mean_logit, X, y, [d], ls.alphas[:, None])
    np.testing.assert_allclose(ls["mean_logit"], ref, rtol=1e-5, atol=1e-6)
    ls2 = L.line(model, CE, X, y, direction=d, num_points=3, metrics={"m": mean_logit, "l": "loss"})
    assert list(ls2.values) == ["m", "l"]


def test_binary_accuracy_single_logit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
    X = torch.randn(100, 2)
    y = (X[:, 0] + X[:, 1] > 0).float().unsqueeze(1)
    d = L.random_direction(model, seed=0)
    ls = L.line(
        model, nn.BCEWithLogitsLoss(), X, y, direction=d, num_points=5, metrics=("accuracy",)
    )
    ref = brute_force(
        model, lambda o, t: ((o > 0).float() == t).float().mean(), X, y, [d], ls.alphas[:, None]
    )
    np.testing.assert_allclose(ls["accuracy"], ref)


def test_no_host_sync_per_grid_point(digits, host_syncs):
    X, y = digits
    model = mlp_with_dropout()
    d1, d2 = L.random_directions(model, 2, seed=0)
    counts = []
    for n in (3, 9):
        for method in ("vmap", "walk"):
            with host_syncs() as c:
                L.plane(model, CE, X, y, d1=d1, d2=d2, num_points=n, method=method, progress=False)
            counts.append(sum(c.values()))
    # Same number of host copies for 9 and 81 points: none inside the grid loop.
    assert counts[0] == counts[2] and counts[1] == counts[3]
    assert max(counts) <= 2


class TestBadInput:
    def setup_method(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        self.X, self.y = torch.randn(10, 2), torch.randn(10, 1)
        self.d = L.random_direction(self.model, seed=0)

    def _line(self, **kw):
        args = {"direction": self.d, "num_points": 3}
        args.update(kw)
        before = state_of(self.model)
        try:
            return L.line(self.model, nn.MSELoss(), self.X, self.y, **args)
        finally:
            assert_same_state(before, state_of(self.model))

    @pytest.mark.parametrize(
        ("kw", "match"),
        [
            ({"num_points": 1}, "num_points"),
            ({"alpha_range": (1, -1)}, "alpha_range"),
            ({"alpha_range": (0, float("nan"))}, "alpha_range"),
            ({"direction": {"5.weight": torch.zeros(1)}}, "not a parameter"),
            ({"direction": {"0.weight": torch.zeros(2, 4)}}, "shape"),
            ({"direction": {}}, "empty"),
            ({"method": "fast"}, "method"),
            ({"metrics": ("loss", "f1")}, "unknown metric"),
            ({"metrics": ()}, "empty"),
            ({"chunk_size": 0}, "chunk_size"),
        ],
    )
    def test_value_errors(self, kw, match):
        with pytest.raises(ValueError, match=match):
            self._line(**kw)

    @pytest.mark.parametrize("method", ["vmap", "walk"])
    def test_non_scalar_loss(self, method):
        with pytest.raises(ValueError, match="scalar"):
            L.line(
                self.model,
                nn.MSELoss(reduction="none"),
                self.X,
                self.y,
                direction=self.d,
                num_points=3,
                method=method,
            )

    def test_empty_data(self):
        with pytest.raises(ValueError, match="empty"):
            L.line(self.model, nn.MSELoss(), self.X[:0], self.y[:0], direction=self.d, num_points=3)
        with pytest.raises(ValueError, match="empty"):
            L.line(
                self.model,
                nn.MSELoss(),
                DataLoader(TensorDataset(self.X[:0], self.y[:0])),
                direction=self.d,
                num_points=3,
            )

    def test_directions_are_required_keywords(self):
        with pytest.raises(TypeError, match="d2"):
            L.plane(self.model, nn.MSELoss(), self.X, self.y, d1=self.d)
        with pytest.raises(TypeError, match="direction"):
            L.line(self.model, nn.MSELoss(), self.X, self.y)
        with pytest.raises(TypeError, match="positional"):
            L.line(self.model, nn.MSELoss(), self.X, self.y, self.d)
        with pytest.raises(TypeError, match="direction 1 must be a dict"):
            self._line(direction=None)

    def test_wrong_types(self):
        with pytest.raises(TypeError):
            L.line("model", nn.MSELoss(), self.X, self.y, direction=self.d)
        with pytest.raises(TypeError):
            self._line(num_points=2.5)
        with pytest.raises(ValueError, match="train mode"):
            self._line(method="vmap", train=True)
