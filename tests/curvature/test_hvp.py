"""Hessian-vector products against the exact Hessian, batching, restore and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optiscope import curvature
from optiscope.curvature import HessianOperator, hvp

from ._reference import assert_same_state, exact_hessian, flatten, state_of


class TestAgainstExactHessian:
    def test_matvec_equals_H_at_v(self, mlp_2_10_1):
        p = mlp_2_10_1
        op = HessianOperator(p.model, p.loss_fn, p.X, p.y)
        assert op.numel == 41 and op.names == p.names
        v = torch.randn(op.numel, generator=torch.Generator().manual_seed(3))
        expected = p.H @ v.double()
        torch.testing.assert_close(op.matvec(v).double(), expected, rtol=1e-5, atol=1e-6)

    def test_matmat_equals_each_column(self, classifier):
        p = classifier
        op = HessianOperator(p.model, p.loss_fn, p.X, p.y)
        V = torch.randn(4, op.numel, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(op.matmat(V).double(), V.double() @ p.H, rtol=1e-4, atol=1e-6)

    def test_dict_interface_keeps_names_and_shapes(self, classifier):
        p = classifier
        v = {n: torch.randn_like(q) for n, q in p.model.named_parameters()}
        out = hvp(p.model, p.loss_fn, p.X, p.y, vector=v)
        assert list(out) == p.names
        assert all(out[n].shape == q.shape for n, q in p.model.named_parameters())
        expected = p.H @ flatten(v, p.names).double()
        torch.testing.assert_close(flatten(out, p.names).double(), expected, rtol=1e-4, atol=1e-6)

    def test_cache_gives_the_same_products(self, classifier):
        p = classifier
        v = torch.randn(sum(p.sizes), generator=torch.Generator().manual_seed(5))
        cached = HessianOperator(p.model, p.loss_fn, p.X, p.y, cache=True)
        fresh = HessianOperator(p.model, p.loss_fn, p.X, p.y, cache=False)
        first = cached.matvec(v)
        torch.testing.assert_close(cached.matvec(v), first, rtol=0, atol=0)
        torch.testing.assert_close(fresh.matvec(v), first, rtol=1e-6, atol=1e-7)

    def test_params_restricts_to_a_diagonal_block(self, mlp_2_10_1):
        p = mlp_2_10_1
        op = HessianOperator(p.model, p.loss_fn, p.X, p.y, params=["2.weight", "2.bias"])
        assert op.numel == 11
        block = p.H[30:, 30:]  # 0.weight (20) + 0.bias (10) come first
        v = torch.randn(11, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(op.matvec(v).double(), block @ v.double(), rtol=1e-5, atol=1e-6)

    def test_hvp_with_params(self, mlp_2_10_1):
        p = mlp_2_10_1
        v = {"2.bias": torch.tensor([2.0])}
        out = hvp(p.model, p.loss_fn, p.X, p.y, vector=v, params=["2.bias"])
        assert list(out) == ["2.bias"]
        torch.testing.assert_close(out["2.bias"].double(), 2 * p.H[40, 40:], rtol=1e-5, atol=1e-6)

    def test_frozen_parameters_are_held_fixed(self, mlp_2_10_1):
        p = mlp_2_10_1
        p.model[0].weight.requires_grad_(False)
        op = HessianOperator(p.model, p.loss_fn, p.X, p.y)
        assert "0.weight" not in op.names and op.numel == 21
        v = torch.randn(21, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(
            op.matvec(v).double(), p.H[20:, 20:] @ v.double(), rtol=1e-5, atol=1e-6
        )


class TestDataLoader:
    def test_batches_weighted_by_size_equal_the_full_batch(self, classifier):
        p = classifier
        # 90 samples in batches of 32: 32, 32, 26 (a ragged last batch must weigh less).
        loader = DataLoader(TensorDataset(p.X, p.y), batch_size=32, shuffle=False)
        op = HessianOperator(p.model, p.loss_fn, loader)
        v = torch.randn(op.numel, generator=torch.Generator().manual_seed(8))
        torch.testing.assert_close(op.matvec(v).double(), p.H @ v.double(), rtol=1e-4, atol=1e-6)
        assert op.cache is False

    def test_an_unweighted_mean_of_batches_would_differ(self, classifier):
        # Guards the test above: with these batch sizes, plain averaging is measurably off.
        p = classifier
        parts = [(p.X[:32], p.y[:32]), (p.X[32:64], p.y[32:64]), (p.X[64:], p.y[64:])]
        v = torch.randn(sum(p.sizes), generator=torch.Generator().manual_seed(8)).double()
        Hs = [exact_hessian(p.model, p.loss_fn, x, y) @ v for x, y in parts]
        assert not torch.allclose(sum(Hs) / 3, p.H @ v, rtol=1e-4, atol=1e-6)

    def test_max_batches(self, classifier):
        p = classifier
        loader = DataLoader(TensorDataset(p.X, p.y), batch_size=32, shuffle=False)
        op = HessianOperator(p.model, p.loss_fn, loader, max_batches=1)
        H1 = exact_hessian(p.model, p.loss_fn, p.X[:32], p.y[:32])
        v = torch.randn(op.numel, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(op.matvec(v).double(), H1 @ v.double(), rtol=1e-4, atol=1e-6)

    def test_no_host_sync_per_batch(self, classifier, host_syncs):
        p = classifier
        loader = DataLoader(TensorDataset(p.X, p.y), batch_size=10, shuffle=False)
        op = HessianOperator(p.model, p.loss_fn, loader)
        v = torch.ones(op.numel)
        with host_syncs() as baseline:  # DataLoader itself draws a seed with .item() per pass
            for _ in range(2):
                for _ in loader:
                    pass
        with host_syncs() as counts:
            op.matvec(v)
            op.matmat(torch.stack([v, v]))
        assert counts == baseline, (counts, baseline)

    def test_no_host_sync_with_tensor_data(self, classifier, host_syncs):
        p = classifier
        op = HessianOperator(p.model, p.loss_fn, p.X, p.y)
        with host_syncs() as counts:
            op.matvec(torch.ones(op.numel))
        assert sum(counts.values()) == 0, counts


class TestInputs:
    def test_tuple_and_dict_inputs(self, mlp_2_10_1):
        p = mlp_2_10_1

        class TwoInputs(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return self.inner(torch.cat([a, b], dim=1))

        model = TwoInputs(p.model)
        v = torch.randn(41, generator=torch.Generator().manual_seed(10))
        expected = p.H @ v.double()
        a, b = p.X[:, :1], p.X[:, 1:]
        layouts = ([(a, b, p.y)], [({"a": a, "b": b}, p.y)], [{"a": a, "b": b, "labels": p.y}])
        for data in layouts:
            op = HessianOperator(model, p.loss_fn, data)
            torch.testing.assert_close(op.matvec(v).double(), expected, rtol=1e-5, atol=1e-6)

    def test_loss_without_targets(self, mlp_2_10_1):
        p = mlp_2_10_1
        op = HessianOperator(p.model, lambda out: F.mse_loss(out, p.y), p.X)
        v = torch.randn(41, generator=torch.Generator().manual_seed(11))
        torch.testing.assert_close(op.matvec(v).double(), p.H @ v.double(), rtol=1e-5, atol=1e-6)


class TestModes:
    def test_evaluated_in_eval_mode_and_mode_restored(self):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 1))
        X, y = torch.randn(20, 3), torch.randn(20, 1)
        model.train()
        op = HessianOperator(model, F.mse_loss, X, y, cache=False)
        v = torch.randn(op.numel)
        a, b = op.matvec(v), op.matvec(v)
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # dropout would make them differ
        H = exact_hessian(model, F.mse_loss, X, y)  # reference is built in eval mode
        torch.testing.assert_close(a.double(), H @ v.double(), rtol=1e-5, atol=1e-6)
        assert model.training and model[2].training

    def test_batchnorm_buffers_untouched(self):
        from optiscope import digits_cnn

        torch.manual_seed(0)
        model = digits_cnn(channels=2).train()
        X, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
        before = state_of(model)
        out = hvp(
            model,
            F.cross_entropy,
            X,
            y,
            vector={n: torch.ones_like(q) for n, q in model.named_parameters()},
        )
        assert all(torch.isfinite(t).all() for t in out.values())
        assert_same_state(before, state_of(model))


class TestRestore:
    def test_model_restored_and_no_grads_left(self, classifier):
        p = classifier
        p.model.train()
        p.model[0].weight.grad = torch.full_like(p.model[0].weight, 0.25)
        before = state_of(p.model)
        hvp(
            p.model,
            p.loss_fn,
            p.X,
            p.y,
            vector={n: torch.ones_like(q) for n, q in p.model.named_parameters()},
        )
        assert_same_state(before, state_of(p.model))

    @pytest.mark.parametrize(
        "call",
        [
            lambda m, lf, X, y: curvature.hessian_eigenvalues(m, lf, X, y, top_k=2, seed=0),
            lambda m, lf, X, y: curvature.hessian_trace(m, lf, X, y, max_iter=20, seed=0),
            lambda m, lf, X, y: curvature.hessian_density(m, lf, X, y, num_iter=10, seed=0),
            lambda m, lf, X, y: curvature.layerwise_curvature(m, lf, X, y, seed=0),
        ],
        ids=["eigenvalues", "trace", "density", "layerwise"],
    )
    def test_restored_after_an_injected_exception(self, mlp_2_10_1, call):
        p = mlp_2_10_1
        p.model.train()
        before = state_of(p.model)
        calls = {"n": 0}

        def flaky(out, target):
            calls["n"] += 1
            if calls["n"] > 3:
                raise RuntimeError("injected failure")
            return F.mse_loss(out, target)

        loader = DataLoader(TensorDataset(p.X, p.y), batch_size=16)
        with pytest.raises(RuntimeError, match="injected failure"):
            call(p.model, flaky, loader, None)
        assert_same_state(before, state_of(p.model))

    def test_global_rng_untouched(self, mlp_2_10_1):
        p = mlp_2_10_1
        state = torch.get_rng_state()
        curvature.hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=4, seed=1)
        curvature.hessian_eigenvalues(p.model, p.loss_fn, p.X, p.y, seed=1)
        assert torch.equal(state, torch.get_rng_state())


class TestBadInput:
    def test_non_scalar_loss(self, mlp_2_10_1):
        p = mlp_2_10_1
        before = state_of(p.model)
        per_sample = lambda out, y: F.mse_loss(out, y, reduction="none")  # noqa: E731
        with pytest.raises(ValueError, match="scalar"):
            curvature.hessian_eigenvalues(p.model, per_sample, p.X, p.y)
        assert_same_state(before, state_of(p.model))

    def test_no_trainable_parameters(self, mlp_2_10_1):
        p = mlp_2_10_1
        p.model.requires_grad_(False)
        with pytest.raises(ValueError, match="no trainable parameters"):
            curvature.hessian_trace(p.model, p.loss_fn, p.X, p.y)
        with pytest.raises(ValueError, match="no trainable parameters"):
            HessianOperator(nn.ReLU(), F.mse_loss, p.X, p.y)

    def test_unknown_or_frozen_param_names(self, mlp_2_10_1):
        p = mlp_2_10_1
        with pytest.raises(ValueError, match="not parameters"):
            HessianOperator(p.model, p.loss_fn, p.X, p.y, params=["0.weigh"])
        p.model[0].bias.requires_grad_(False)
        with pytest.raises(ValueError, match="requires_grad=False"):
            HessianOperator(p.model, p.loss_fn, p.X, p.y, params=["0.bias"])

    def test_wrong_vectors(self, mlp_2_10_1):
        p = mlp_2_10_1
        op = HessianOperator(p.model, p.loss_fn, p.X, p.y)
        with pytest.raises(ValueError, match="shape"):
            op.matvec(torch.ones(40))
        with pytest.raises(ValueError, match="shape"):
            op.matmat(torch.ones(41))
        with pytest.raises(ValueError, match="missing"):
            op({"0.weight": torch.ones(10, 2)})

    def test_wrong_kinds_and_empty_data(self, mlp_2_10_1):
        p = mlp_2_10_1
        with pytest.raises(TypeError, match="nn.Module"):
            HessianOperator(lambda x: x, p.loss_fn, p.X, p.y)
        with pytest.raises(TypeError, match="callable"):
            HessianOperator(p.model, 3, p.X, p.y)
        with pytest.raises(ValueError, match="empty"):
            HessianOperator(p.model, p.loss_fn, p.X[:0], p.y[:0])

    @settings(max_examples=15, deadline=None)
    @given(st.integers(max_value=0))
    def test_max_batches_must_be_positive(self, bad):
        model = nn.Linear(2, 1)
        with pytest.raises(ValueError, match="max_batches"):
            HessianOperator(model, F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), max_batches=bad)

    @pytest.mark.parametrize(
        ("name", "value"),
        [("max_batches", 1.5), ("max_batches", True), ("cache", 1), ("params", 3)],
    )
    def test_wrong_kinds_are_type_errors(self, name, value):
        model = nn.Linear(2, 1)
        with pytest.raises(TypeError, match=name):
            HessianOperator(model, F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), **{name: value})

    def test_loss_fn_of_the_wrong_kind(self):
        with pytest.raises(TypeError, match="loss_fn must be"):
            HessianOperator(nn.Linear(2, 1), "mse", torch.ones(3, 2), torch.ones(3, 1))


class TestBatchLosses:
    def test_function_loss_and_target_loss_instances(self, mlp_2_10_1):
        from optiscope.batch_loss import FunctionLoss, TargetLoss

        p = mlp_2_10_1
        v = torch.randn(41, generator=torch.Generator().manual_seed(12))
        expected = p.H @ v.double()
        fl = FunctionLoss(lambda m, b: F.mse_loss(m(b["x"]), b["y"]))
        for loss_fn, data in (
            (fl, [{"x": p.X, "y": p.y}]),
            (TargetLoss(F.mse_loss), [(p.X, p.y)]),
        ):
            op = HessianOperator(p.model, loss_fn, data)
            torch.testing.assert_close(op.matvec(v).double(), expected, rtol=1e-5, atol=1e-6)

    def test_a_model_that_returns_its_loss(self, mlp_2_10_1):
        p = mlp_2_10_1

        class WithLoss(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
                return {"loss": F.mse_loss(self.inner(x), labels)}

        v = torch.randn(41, generator=torch.Generator().manual_seed(13))
        op = HessianOperator(WithLoss(p.model), None, [{"x": p.X, "labels": p.y}])
        torch.testing.assert_close(op.matvec(v).double(), p.H @ v.double(), rtol=1e-5, atol=1e-6)

    def test_an_unreadable_batch_is_a_type_error(self, mlp_2_10_1):
        p = mlp_2_10_1
        op = HessianOperator(p.model, p.loss_fn, [{"x": p.X}])
        with pytest.raises(TypeError, match="labels"):
            op.matvec(torch.ones(41))
