"""Eigenvalues and eigenvectors against torch.linalg.eigvalsh of the exact Hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optiscope import curvature
from optiscope.curvature import EigenResult, hessian_eigenvalues

from ._reference import assert_same_state, flatten, make_problem, state_of


def _rel_err(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    return (got.double() - expected).abs() / expected.abs()


class TestLanczos:
    def test_top_k_largest_to_relative_1e_3(self, classifier):
        p = classifier
        r = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=3, seed=0)
        assert isinstance(r, EigenResult) and r.converged
        expected = p.eigvals.flip(0)[:3]
        assert _rel_err(r.eigenvalues, expected).max() < 1e-3
        assert r.top == pytest.approx(float(expected[0]), rel=1e-3)
        assert r.iterations < sum(p.sizes)  # converged before exhausting the space

    def test_smallest_finds_negative_curvature(self, mlp_2_10_1):
        p = mlp_2_10_1
        assert p.eigvals[0] < 0  # the fixture's Hessian is indefinite
        r = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=2, seed=0, which="smallest")
        assert _rel_err(r.eigenvalues, p.eigvals[:2]).max() < 1e-3

    def test_magnitude_order(self, mlp_2_10_1):
        p = mlp_2_10_1
        r = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=4, seed=0, which="magnitude")
        by_mag = p.eigvals[p.eigvals.abs().argsort(descending=True)][:4]
        assert _rel_err(r.eigenvalues, by_mag).max() < 1e-3

    def test_eigenvectors_are_orthonormal_eigenpairs_of_H(self, classifier):
        p = classifier
        r = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=3, seed=1, tol=1e-5)
        V = torch.stack([flatten(v, p.names) for v in r.eigenvectors]).double()
        torch.testing.assert_close(V @ V.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
        residual = (V @ p.H - r.eigenvalues[:, None] * V).norm(dim=1)
        assert (residual <= 1e-3 * r.eigenvalues.abs()).all()
        for v in r.eigenvectors:
            assert {n: t.shape for n, t in v.items()} == {
                n: q.shape for n, q in p.model.named_parameters()
            }

    def test_full_space_is_exact(self, mlp_2_10_1):
        p = mlp_2_10_1
        r = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=41, max_iter=500, seed=0)
        assert r.iterations == 41 and r.converged
        torch.testing.assert_close(r.eigenvalues, p.eigvals.flip(0), atol=1e-4, rtol=1e-3)

    def test_breakdown_restarts_for_repeated_eigenvalues(self):
        # Linear least squares on orthogonal inputs: H = diag(0.5 x10, 2 x10) has two
        # distinct eigenvalues, so every Krylov space is invariant after two steps and
        # the other copies of 0.4 can only be found by restarting.
        model = nn.Linear(20, 1, bias=False)
        X = torch.diag(torch.tensor([1.0] * 10 + [2.0] * 10))
        y = torch.zeros(20, 1)
        r = hessian_eigenvalues(model, F.mse_loss, X, y, top_k=3, seed=0)
        assert r.converged
        torch.testing.assert_close(r.eigenvalues, torch.full((3,), 0.4, dtype=torch.float64))
        V = torch.stack([v["weight"].reshape(-1) for v in r.eigenvectors]).double()
        torch.testing.assert_close(V @ V.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)

    def test_dataloader_gives_the_full_batch_eigenvalues(self, classifier):
        p = classifier
        loader = DataLoader(TensorDataset(p.X, p.y), batch_size=40, shuffle=True)
        r = hessian_eigenvalues(p.model, p.loss_fn, loader, top_k=2, seed=0)
        assert _rel_err(r.eigenvalues, p.eigvals.flip(0)[:2]).max() < 1e-3

    def test_same_seed_same_result(self, classifier):
        p = classifier
        a = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=2, seed=5)
        b = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=2, seed=5)
        assert torch.equal(a.eigenvalues, b.eigenvalues)
        assert all(torch.equal(a.eigenvectors[0][n], b.eigenvectors[0][n]) for n in p.names)

    def test_params_block(self, mlp_2_10_1):
        p = mlp_2_10_1
        r = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, seed=0, params=["0.weight"])
        expected = torch.linalg.eigvalsh(p.H[:20, :20])[-1]
        assert _rel_err(r.eigenvalues, expected).max() < 1e-3
        assert list(r.eigenvectors[0]) == ["0.weight"]

    def test_model_restored(self, classifier):
        p = classifier
        p.model.train()
        before = state_of(p.model)
        hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, top_k=2, seed=0)
        assert_same_state(before, state_of(p.model))

    def test_one_host_copy_per_iteration_not_per_batch(self, classifier, host_syncs):
        p = classifier
        few = DataLoader(TensorDataset(p.X, p.y), batch_size=45)
        many = DataLoader(TensorDataset(p.X, p.y), batch_size=9)
        counts = []
        for loader in (few, many):
            with host_syncs() as c:
                r = hessian_eigenvalues(p.model, p.loss_fn, loader, max_iter=12, tol=1e-9, seed=0)
            counts.append((sum(c.values()) - c["item"], r.iterations))
        # .item() is the DataLoader's own per-pass seed; ours do not grow with batches.
        assert counts[0] == counts[1]
        assert counts[0][0] <= 2 * counts[0][1] + 4


class TestPower:
    def test_power_iteration_top_eigenvalues(self, classifier):
        p = classifier
        r = hessian_eigenvalues(
            p.model, p.loss_fn, p.X, p.y, top_k=2, max_iter=500, tol=1e-6, seed=0,
            which="magnitude", method="power",
        )  # fmt: skip
        by_mag = p.eigvals[p.eigvals.abs().argsort(descending=True)][:2]
        assert _rel_err(r.eigenvalues, by_mag).max() < 1e-3
        V = torch.stack([flatten(v, p.names) for v in r.eigenvectors]).double()
        assert abs(float(V[0] @ V[1])) < 1e-3

    def test_power_needs_which_magnitude(self, classifier):
        p = classifier
        with pytest.raises(ValueError, match="which='magnitude'"):
            hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, method="power")


class TestBadInput:
    @settings(max_examples=10, deadline=None)
    @given(st.integers(max_value=0))
    def test_top_k_below_one(self, top_k):
        model = nn.Linear(2, 1)
        before = state_of(model)
        with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
            hessian_eigenvalues(model, F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), top_k=top_k)
        assert_same_state(before, state_of(model))

    @settings(max_examples=10, deadline=None)
    @given(st.integers(max_value=0))
    def test_max_iter(self, max_iter):
        with pytest.raises(ValueError, match="max_iter"):
            hessian_eigenvalues(
                nn.Linear(2, 1), F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), max_iter=max_iter
            )

    @pytest.mark.parametrize(
        ("name", "value"),
        [("max_iter", 2.0), ("top_k", True), ("tol", "1e-3"), ("which", 1), ("method", None)],
    )
    def test_wrong_kinds_are_type_errors(self, name, value):
        with pytest.raises(TypeError, match=name):
            hessian_eigenvalues(
                nn.Linear(2, 1), F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), **{name: value}
            )

    @settings(max_examples=10, deadline=None)
    @given(st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf"))))
    def test_tol(self, tol):
        with pytest.raises(ValueError, match="tol"):
            hessian_eigenvalues(
                nn.Linear(2, 1), F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), tol=tol
            )

    def test_other_arguments(self):
        args = (nn.Linear(2, 1), F.mse_loss, torch.ones(3, 2), torch.ones(3, 1))
        with pytest.raises(ValueError, match="top_k must be <= the number of parameters"):
            hessian_eigenvalues(*args, top_k=4)
        with pytest.raises(ValueError, match="which"):
            hessian_eigenvalues(*args, which="top")
        with pytest.raises(ValueError, match="method"):
            hessian_eigenvalues(*args, method="arnoldi")
        with pytest.raises(TypeError, match="seed"):
            hessian_eigenvalues(*args, seed=1.5)


def test_directions_cover_every_parameter_and_are_eigenvectors(mlp_2_10_1):
    p = mlp_2_10_1
    p.model[2].bias.requires_grad_(False)
    d1, d2 = curvature.hessian_directions(p.model, p.loss_fn, p.X, p.y, seed=0, tol=1e-5)
    assert list(d1) == [n for n, _ in p.model.named_parameters()]
    assert torch.equal(d1["2.bias"], torch.zeros(1)) and torch.equal(d2["2.bias"], torch.zeros(1))
    assert all(d1[n].shape == q.shape for n, q in p.model.named_parameters())
    names = p.names[:-1]
    H = make_problem(p.model, p.loss_fn, p.X, p.y).H  # without the frozen bias
    top = torch.linalg.eigh(H)
    for d, k in ((d1, -1), (d2, -2)):
        v = flatten(d, names).double()
        assert abs(float(v @ top.eigenvectors[:, k])) == pytest.approx(1.0, abs=1e-4)
    # The sign is fixed: the largest entry is positive.
    v = flatten(d1, names)
    assert v[v.abs().argmax()] > 0


def test_directions_bad_count(mlp_2_10_1):
    p = mlp_2_10_1
    with pytest.raises(ValueError, match="num_directions"):
        curvature.hessian_directions(p.model, p.loss_fn, p.X, p.y, num_directions=0)


@settings(max_examples=15, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=2, max_value=12),
    st.integers(min_value=0, max_value=2**16),
)
def test_least_squares_matches_the_closed_form(features, samples, seed):
    # For mean squared error of a linear model, H = (2 / N) X^T X whatever the weights.
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, features, generator=g, dtype=torch.float64)
    model = nn.Linear(features, 1, bias=False).double()
    y = torch.randn(samples, 1, generator=g, dtype=torch.float64)
    expected = torch.linalg.eigvalsh(2 / samples * X.T @ X).flip(0)
    k = min(2, features)
    r = hessian_eigenvalues(model, F.mse_loss, X, y, top_k=k, seed=seed, tol=1e-8)
    torch.testing.assert_close(r.eigenvalues, expected[:k], rtol=1e-6, atol=1e-9)


def test_landscape_along_the_directions_curves_by_the_eigenvalues(mlp_2_10_1):
    # The second difference of the loss along unit eigenvector d_i is d_i^T H d_i = lambda_i.
    from optiscope import landscape

    p = mlp_2_10_1
    d1, d2 = curvature.hessian_directions(p.model, p.loss_fn, p.X, p.y, seed=0, tol=1e-5)
    lam = p.eigvals.flip(0)[:2]
    h = 0.05
    for d, expected in ((d1, lam[0]), (d2, lam[1])):
        loss = landscape.line(
            p.model,
            p.loss_fn,
            p.X,
            p.y,
            direction=d,
            alpha_range=(-h, h),
            num_points=3,
            progress=False,
        )
        f = loss.values["loss"]
        assert (f[0] - 2 * f[1] + f[2]) / h**2 == pytest.approx(float(expected), rel=2e-2)
    plane = landscape.plane(
        p.model, p.loss_fn, p.X, p.y, d1=d1, d2=d2, num_points=3, progress=False
    )
    assert plane.values["loss"].shape == (3, 3)


class TestWarmStart:
    def test_the_top_eigenvector_as_v0_converges_at_once(self, classifier):
        p = classifier
        cold = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, seed=0, tol=1e-4)
        warm = hessian_eigenvalues(
            p.model, p.loss_fn, p.X, p.y, seed=0, tol=1e-4, v0=cold.eigenvectors[0]
        )
        assert warm.converged and warm.iterations <= 3 < cold.iterations
        expected = float(p.eigvals[-1])
        assert warm.top == pytest.approx(expected, rel=1e-3)

    def test_flat_and_dict_v0_agree_and_power_accepts_it(self, classifier):
        p = classifier
        g = torch.Generator().manual_seed(3)
        flat = torch.randn(sum(p.sizes), generator=g)
        as_dict = dict(zip(p.names, flat.split(p.sizes)))
        as_dict = {
            n: t.reshape(q.shape) for (n, t), q in zip(as_dict.items(), p.model.parameters())
        }
        a = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, seed=0, v0=flat)
        b = hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, seed=0, v0=as_dict)
        assert torch.equal(a.eigenvalues, b.eigenvalues)
        c = hessian_eigenvalues(
            p.model, p.loss_fn, p.X, p.y, seed=0, v0=flat, method="power", which="magnitude",
            max_iter=300, tol=1e-6,
        )  # fmt: skip
        assert abs(c.top) == pytest.approx(float(p.eigvals.abs().max()), rel=1e-2)

    def test_bad_v0(self, classifier):
        p = classifier
        n = sum(p.sizes)
        with pytest.raises(ValueError, match="v0 must have shape"):
            hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, v0=torch.ones(n + 1))
        with pytest.raises(ValueError, match="non-zero"):
            hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, v0=torch.zeros(n))
        with pytest.raises(TypeError, match="v0"):
            hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, v0=[1.0] * n)
