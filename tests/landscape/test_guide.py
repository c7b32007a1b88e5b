from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import optiscope
from optiscope import visualize_loss_1d, visualize_loss_2d, visualize_loss_random_directions

from .conftest import assert_same_state, state_of


@pytest.fixture
def guide_problem():
    """The guide's Part 3 example: a 2-10-1 network, 100 points, BCE with logits."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
    X = torch.randn(100, 2)
    y = (X[:, 0] + X[:, 1] > 0).float().unsqueeze(1)
    return model, nn.BCEWithLogitsLoss(), X, y


def _guide_1d(model, loss_fn, X, y, name, index, alphas):
    """The guide's loop (with an exact name), for reference values."""
    p = dict(model.named_parameters())[name]
    orig = p.data.clone()
    flat = orig.flatten()
    out = []
    for a in alphas:
        d = torch.zeros_like(flat)
        d[index] = 1.0
        p.data = (flat + a * d).reshape(orig.shape)
        with torch.no_grad():
            out.append(loss_fn(model(X), y).item())
    p.data = orig
    return out


def test_star_import_exports_the_guide_names():
    ns: dict = {}
    exec("from optiscope import *", ns)
    for name in ("visualize_loss_1d", "visualize_loss_2d", "visualize_loss_random_directions"):
        assert name in ns and name in optiscope.__all__


def test_1d_equals_the_guide_loop(guide_problem):
    model, loss_fn, X, y = guide_problem
    alphas, losses = visualize_loss_1d(model, loss_fn, X, y, param_name="0.weight", param_index=3)
    np.testing.assert_allclose(alphas, np.linspace(-1, 1, 100))
    assert isinstance(losses, list) and len(losses) == 100
    ref = _guide_1d(model, loss_fn, X, y, "0.weight", 3, alphas)
    np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=1e-7)


def test_2d_orientation_and_values(guide_problem):
    model, loss_fn, X, y = guide_problem
    alphas, losses = visualize_loss_2d(
        model, loss_fn, X, y, "2.weight", indices=(1, 6), alpha_range=(-0.5, 0.5), num_points=6
    )
    p = model[2].weight
    state = p.detach().clone()
    ref = np.zeros((6, 6))
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate(alphas):
                w = state.clone().flatten()
                w[1] += a
                w[6] += b
                p.copy_(w.view_as(p))
                ref[i, j] = float(loss_fn(model(X), y))
        p.copy_(state)
    np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=1e-7)
    assert not np.allclose(losses, losses.T, rtol=1e-3)  # the test can tell i from j


def test_2d_contour_is_not_transposed(guide_problem, monkeypatch):
    from matplotlib.axes import Axes

    model, loss_fn, X, y = guide_problem
    seen = {}
    original = Axes.contour

    def spy(self, *args, **kwargs):
        seen["args"] = args
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "contour", spy)
    alphas, losses = visualize_loss_2d(
        model, loss_fn, X, y, "2.weight", indices=(0, 5), num_points=5
    )
    x, yy, z = seen["args"][:3]
    # contour(x, y, Z) reads Z[y_index, x_index]: direction 1 on x needs losses.T (the
    # guide passed losses and drew the plot transposed).
    np.testing.assert_array_equal(z, losses.T)
    np.testing.assert_array_equal(x, alphas)
    assert not np.allclose(losses, losses.T, rtol=1e-3)


def test_random_directions_filter_default_and_restore(guide_problem, monkeypatch):
    import matplotlib.pyplot as plt

    model, loss_fn, X, y = guide_problem
    model.train()
    before = state_of(model)
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("blocked"))
    alphas, losses = visualize_loss_random_directions(
        model, loss_fn, X, y, num_directions=3, num_points=9, seed=4
    )
    assert losses.shape == (3, 9)
    assert_same_state(before, state_of(model))
    d = optiscope.landscape.random_directions(model, 3, seed=4)
    for k in range(3):
        ls = optiscope.landscape.line(model, loss_fn, X, y, direction=d[k], num_points=9)
        np.testing.assert_allclose(losses[k], ls.loss, rtol=1e-5, atol=1e-7)
    # The centre of every curve is the unperturbed loss.
    model.eval()
    with torch.no_grad():
        centre = float(loss_fn(model(X), y))
    np.testing.assert_allclose(losses[:, 4], centre, rtol=1e-6)


def test_guide_examples_run_with_star_import(tmp_path):
    ns: dict = {}
    exec("from optiscope import *\nimport torch\nfrom torch import nn", ns)
    code = """
model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
X = torch.randn(100, 2)
y = (X[:, 0] + X[:, 1] > 0).float().unsqueeze(1)
loss_fn = nn.BCEWithLogitsLoss()
one = visualize_loss_1d(model, loss_fn, X, y, param_name='0.weight', param_index=0)
two = visualize_loss_2d(model, loss_fn, X, y, param_name='0.weight',
                        indices=(0, 1), alpha_range=(-0.5, 0.5), num_points=30)
visualize_loss_random_directions(model, loss_fn, X, y, num_directions=10)
"""
    exec(code, ns)
    alphas, losses = ns["one"]
    assert len(alphas) == len(losses) == 100 and np.all(np.isfinite(losses))
    alphas2, losses2 = ns["two"]
    assert losses2.shape == (30, 30)
    # The guide's 2-D grid is symmetric around the current weights (alpha_range +-0.5).
    np.testing.assert_allclose(alphas2, np.linspace(-0.5, 0.5, 30))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, f, X, y: visualize_loss_1d(m, f, X, y, "weight"), "several"),
        (lambda m, f, X, y: visualize_loss_1d(m, f, X, y, "3.weight"), "no parameter"),
        (lambda m, f, X, y: visualize_loss_1d(m, f, X, y, "0.weight", 20), "out of range"),
        (lambda m, f, X, y: visualize_loss_1d(m, f, X, y, "0.bias", num_points=1), "num_points"),
        (lambda m, f, X, y: visualize_loss_2d(m, f, X, y, "0.weight", (0, 0)), "different"),
        (lambda m, f, X, y: visualize_loss_2d(m, f, X, y, "0.weight", (0, 25)), "out of range"),
        (lambda m, f, X, y: visualize_loss_random_directions(m, f, X, y, 0), "num_directions"),
    ],
)
def test_bad_input(guide_problem, call, match):
    model, loss_fn, X, y = guide_problem
    before = state_of(model)
    with pytest.raises(ValueError, match=match):
        call(model, loss_fn, X, y)
    assert_same_state(before, state_of(model))
