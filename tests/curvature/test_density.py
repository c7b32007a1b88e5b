"""Stochastic Lanczos quadrature density: normalisation, mean, exactness, plot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from torch import nn

from optiscope.curvature import DensityResult, hessian_density, plot_density

from ._reference import assert_same_state, state_of


def test_integrates_to_one_and_weights_sum_to_one(classifier):
    p = classifier
    d = hessian_density(p.model, p.loss_fn, p.X, p.y, num_iter=30, num_runs=3, seed=0)
    assert isinstance(d, DensityResult) and d.ritz_values.shape == (3, 30)
    torch.testing.assert_close(d.weights.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert float(torch.trapezoid(d.density, d.grid)) == pytest.approx(1.0, abs=1e-3)
    assert (d.density >= 0).all()


def test_mean_matches_trace_over_n(classifier):
    p = classifier
    n = sum(p.sizes)
    d = hessian_density(p.model, p.loss_fn, p.X, p.y, num_iter=20, num_runs=40, seed=1)
    per_run = (d.weights * d.ritz_values).sum(dim=1)  # = q^T H q for each unit probe
    stderr = float(per_run.std()) / 40**0.5
    exact = float(p.H.trace()) / n
    assert abs(d.mean - exact) <= 3 * stderr
    assert d.trace == pytest.approx(d.mean * n)
    # The density's own first moment is that mean too.
    first_moment = float(torch.trapezoid(d.grid * d.density, d.grid))
    assert first_moment == pytest.approx(d.mean, rel=1e-3, abs=1e-6)


def test_full_lanczos_is_exact_quadrature(mlp_2_10_1):
    # With m = n steps the Ritz values are the eigenvalues, and sum w theta^2 = q^T H^2 q.
    p = mlp_2_10_1
    d = hessian_density(p.model, p.loss_fn, p.X, p.y, num_iter=100, seed=2)
    assert d.ritz_values.shape == (1, 41)
    torch.testing.assert_close(d.ritz_values[0], p.eigvals, atol=1e-4, rtol=1e-3)
    g = torch.Generator().manual_seed(2)
    q = (torch.randint(0, 2, (41,), generator=g) * 2 - 1).double() / 41**0.5
    moments = [(d.weights[0] * d.ritz_values[0] ** k).sum() for k in (1, 2)]
    torch.testing.assert_close(moments[0], q @ p.H @ q, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(moments[1], q @ p.H @ p.H @ q, rtol=1e-4, atol=1e-6)


def test_model_restored_and_deterministic(mlp_2_10_1):
    p = mlp_2_10_1
    before = state_of(p.model)
    a = hessian_density(p.model, p.loss_fn, p.X, p.y, num_iter=10, seed=3)
    b = hessian_density(p.model, p.loss_fn, p.X, p.y, num_iter=10, seed=3)
    assert torch.equal(a.density, b.density)
    assert_same_state(before, state_of(p.model))


def test_sigma_and_grid(mlp_2_10_1):
    p = mlp_2_10_1
    d = hessian_density(p.model, p.loss_fn, p.X, p.y, num_iter=10, seed=0, sigma=0.05, grid_size=50)
    assert d.sigma == 0.05 and d.grid.shape == d.density.shape == (50,)
    assert float(d.grid[0]) == pytest.approx(float(d.ritz_values.min()) - 0.25)


def test_plot(mlp_2_10_1, tmp_path):
    import matplotlib.pyplot as plt

    p = mlp_2_10_1
    d = hessian_density(p.model, p.loss_fn, p.X, p.y, num_iter=10, seed=0)
    fig = plot_density(d, path=tmp_path / "density.png")
    assert isinstance(fig, Figure) and (tmp_path / "density.png").stat().st_size > 0
    assert fig.axes[0].get_yscale() == "log"
    _, ax = plt.subplots()
    assert d.plot(ax=ax, log=False) is ax.figure
    assert ax.get_yscale() == "linear"
    x, y = ax.lines[0].get_data()
    assert len(x) == len(d.grid) and y.max() == pytest.approx(float(d.density.max()))


@settings(max_examples=10, deadline=None)
@given(
    st.sampled_from(["num_iter", "num_runs", "grid_size", "sigma"]),
    st.integers(max_value=0),
)
def test_bad_values(name, value):
    with pytest.raises(ValueError, match=name):
        hessian_density(
            nn.Linear(2, 1), F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), **{name: value}
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [("num_iter", 2.0), ("num_runs", True), ("grid_size", "10"), ("sigma", "0.1")],
)
def test_bad_kinds(name, value):
    with pytest.raises(TypeError, match=name):
        hessian_density(
            nn.Linear(2, 1), F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), **{name: value}
        )


def test_breakdown_keeps_the_exact_two_point_spectrum():
    # H = diag(0.1 x10, 0.4 x10): a unit Rademacher probe puts mass 1/2 on each
    # eigenvalue, and Lanczos breaks down after two steps; restarted blocks must add no
    # weight (they are orthogonal to the probe).
    model = nn.Linear(20, 1, bias=False)
    X = torch.diag(torch.tensor([1.0] * 10 + [2.0] * 10))
    d = hessian_density(model, F.mse_loss, X, torch.zeros(20, 1), num_iter=8, seed=0)
    theta, w = d.ritz_values[0], d.weights[0]
    assert torch.isfinite(theta).all()
    heavy = w > 1e-6
    assert int(heavy.sum()) == 2
    torch.testing.assert_close(theta[heavy], torch.tensor([0.1, 0.4], dtype=torch.float64))
    torch.testing.assert_close(w[heavy], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert d.mean == pytest.approx(0.25, rel=1e-6)
