"""grad_norms, GradientTracker, the guide's tracking loop and plot, and the AMP order."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from optiscope import (
    GradientTracker,
    NormClip,
    ZClip,
    clip_grad_norm_,
    grad_norms,
    plot_gradient_norms,
    train_with_gradient_tracking,
)


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
    )


def backward(model: torch.nn.Module, scale: float = 1.0) -> None:
    model.zero_grad()
    (model(torch.randn(5, 4)).pow(2).sum() * scale).backward()


class TestGradNorms:
    @pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
    def test_per_parameter_norms(self, norm_type):
        model = small_model()
        backward(model)
        model[2].bias.grad = None
        got = grad_norms(model, norm_type)
        want = {
            n: torch.linalg.vector_norm(p.grad, norm_type)
            for n, p in model.named_parameters()
            if p.grad is not None
        }
        assert list(got) == list(want) and "2.bias" not in got
        for n in want:
            torch.testing.assert_close(got[n], want[n])

    def test_empty_and_bad_input(self):
        assert grad_norms(small_model()) == {}
        with pytest.raises(TypeError, match="Module"):
            grad_norms([torch.zeros(2)])
        with pytest.raises(ValueError, match="norm_type"):
            grad_norms(small_model(), norm_type=-1)


class TestGradientTracker:
    @pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
    def test_global_and_layer_norms(self, norm_type):
        model = small_model()
        tracker = GradientTracker(model, norm_type)
        expected_global, expected_layers = [], {"0": [], "2": [], "3": []}
        for step in range(4):
            backward(model, scale=10.0**step)
            if step == 2:
                model[3].bias.grad = None
            total = tracker.record()
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            want_total = torch.nn.utils.get_total_norm(list(grads.values()), norm_type)
            torch.testing.assert_close(total, want_total)
            expected_global.append(want_total.item())
            for layer in expected_layers:
                gs = [g for n, g in grads.items() if n.startswith(layer + ".")]
                expected_layers[layer].append(torch.nn.utils.get_total_norm(gs, norm_type).item())
        h = tracker.history()
        assert len(tracker) == 4 and tracker.layers == ["0", "2", "3"]
        for got, want in zip(h["global"], expected_global):
            assert math.isclose(got, want, rel_tol=1e-5)
        for layer, values in expected_layers.items():
            for got, want in zip(h["layers"][layer], values):
                assert math.isclose(got, want, rel_tol=1e-5)
        s = tracker.summary()
        assert math.isclose(s["global"]["max"], max(expected_global), rel_tol=1e-5)
        assert math.isclose(s["0"]["last"], expected_layers["0"][-1], rel_tol=1e-5)
        tracker.reset()
        assert len(tracker) == 0 and tracker.history()["global"] == []

    def test_record_does_not_sync_history_syncs_once(self, host_syncs):
        model = small_model()
        tracker = GradientTracker(model)
        with host_syncs() as counts:
            for _ in range(5):
                backward(model)
                tracker.record()
        assert sum(counts.values()) == 0, counts
        with host_syncs() as counts:
            tracker.history()
        assert counts["tolist"] == 1 and counts["item"] == 0

    def test_bad_input(self):
        with pytest.raises(TypeError, match="Module"):
            GradientTracker("model")
        with pytest.raises(ValueError, match="no parameters"):
            GradientTracker(torch.nn.ReLU())
        with pytest.raises(ValueError, match="nothing recorded"):
            GradientTracker(small_model()).summary()


def loader(n: int = 48, batch: int = 16, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen))
    return DataLoader(data, batch_size=batch)


def reference_loop(model, train_loader, optimizer, epochs, max_grad_norm):
    """The guide's loop with its missing import supplied (per-step .item() and all)."""
    grad_norms, losses = [], []
    for _ in range(epochs):
        for data, target in train_loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(data), target)
            loss.backward()
            total = torch.norm(
                torch.stack([torch.norm(p.grad.detach(), 2.0) for p in model.parameters()]), 2.0
            ).item()
            grad_norms.append(total)
            losses.append(loss.item())
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
    return grad_norms, losses


class TestTrainWithGradientTracking:
    def test_matches_guide_loop(self):
        a, b = small_model(1), small_model(1)
        opt_a = torch.optim.SGD(a.parameters(), lr=0.5)
        opt_b = torch.optim.SGD(b.parameters(), lr=0.5)
        norms, losses = train_with_gradient_tracking(
            a, loader(), opt_a, epochs=2, max_grad_norm=0.1
        )
        ref_norms, ref_losses = reference_loop(b, loader(), opt_b, 2, 0.1)
        assert len(norms) == len(losses) == 6
        for x, y in zip(norms + losses, ref_norms + ref_losses):
            assert math.isclose(x, y, rel_tol=1e-5)
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q)

    def test_syncs_once_per_epoch(self, host_syncs):
        model = small_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        batches = list(loader(n=64, batch=8))  # 8 steps per epoch
        with host_syncs() as counts:
            train_with_gradient_tracking(model, batches, opt, epochs=3)
        # One .cpu() and two .tolist() on the same host copy per epoch; nothing per step.
        assert counts["item"] == 0 and counts["__float__"] == 0 and counts["__bool__"] == 0
        assert counts["cpu"] == 3

    def test_no_clipping_and_bad_input(self):
        model = small_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        norms, _ = train_with_gradient_tracking(model, loader(), opt, 1, max_grad_norm=None)
        assert len(norms) == 3 and all(n > 0 for n in norms)
        with pytest.raises(ValueError, match="epochs"):
            train_with_gradient_tracking(model, loader(), opt, epochs=0)
        with pytest.raises(ValueError, match="max_norm"):
            train_with_gradient_tracking(model, loader(), opt, max_grad_norm=0.0)
        with pytest.raises(ValueError):
            train_with_gradient_tracking(model, [], opt, epochs=1)


class TestPlot:
    def test_returns_figure_with_both_panels(self, tmp_path):
        from matplotlib.figure import Figure

        fig = plot_gradient_norms(
            torch.tensor([1.0, 2.0, 0.5]),
            [2.0, 1.5, 1.0],
            max_grad_norm=1.0,
            path=tmp_path / "g.png",
        )
        assert isinstance(fig, Figure) and (tmp_path / "g.png").stat().st_size > 0
        top, bottom = fig.axes
        assert top.get_yscale() == "log" and list(top.lines[0].get_ydata()) == [1.0, 2.0, 0.5]
        assert list(bottom.lines[0].get_ydata()) == [2.0, 1.5, 1.0]
        assert top.lines[1].get_ydata()[0] == 1.0  # the clip limit

    def test_into_given_axes(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2)
        assert plot_gradient_norms([1.0], [1.0], ax=axes) is fig
        with pytest.raises(TypeError, match="pair"):
            plot_gradient_norms([1.0], [1.0], ax=[axes[0]])
        with pytest.raises(TypeError, match="grad_norms"):
            plot_gradient_norms(["a"], [1.0])


class TestAMP:
    def test_bf16_autocast_order_on_cpu(self, host_syncs):
        """scale -> backward -> unscale_ -> clip -> step -> update, with bf16 autocast."""
        model = small_model(2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        clipper = ZClip(warmup_steps=1)
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        for _ in range(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            unscaled = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
            result = clipper(model.parameters())
            # The clipper saw the unscaled gradients, not the 1024x scaled ones.
            torch.testing.assert_close(result.total_norm, unscaled)
            scaler.step(opt)
            scaler.update()
        assert all(torch.isfinite(p).all() for p in model.parameters())

    def test_bf16_gradients_clip_like_float32(self):
        torch.manual_seed(3)
        w32 = torch.nn.Parameter(torch.randn(64, 32))
        w32.grad = torch.randn(64, 32) * 50
        w16 = torch.nn.Parameter(w32.detach().bfloat16())
        w16.grad = w32.grad.bfloat16()
        ref = torch.nn.utils.get_total_norm([w16.grad.float()])
        n16 = clip_grad_norm_([w16], 1.0)
        r = NormClip(1.0)([w32])
        assert n16.dtype == torch.float32
        torch.testing.assert_close(n16, ref)
        torch.testing.assert_close(w16.grad.float(), w32.grad, rtol=2e-2, atol=1e-4)
        assert r.clipped.item()
