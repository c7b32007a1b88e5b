"""Per-sample gradient histograms: against numpy on a plain per-sample loop, against
Cockpit's GradHist1d and GradHist2d, and their handling of non-finite values, large
counts, checkpoints and figures."""

from __future__ import annotations

import copy
import io
import warnings

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from optiscope.batch_loss import as_batch_loss
from optiscope.instruments import Histogram, Instruments, gradient_histograms, plots
from optiscope.instruments._grad_tests import per_sample_gradients
from optiscope.instruments._hist import HistSpec, bin_gradients
from tests.instruments._helpers import data, mlp, run_loop

matplotlib.use("Agg")

BOTH = ("grad_hist", "grad_hist_2d")


def _plain_gradients(model, X, y):
    """``(B, numel)`` per-sample gradients one sample at a time, and the flat weights."""
    rows = []
    for i in range(len(X)):
        model.zero_grad()
        F.cross_entropy(model(X[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    model.zero_grad()
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.stack(rows), weights


def _mismatch(ours: np.ndarray, ref: np.ndarray) -> int:
    """Values counted in a different bin (a value within rounding of an edge may)."""
    return int(np.abs(ours.astype(np.int64) - ref.astype(np.int64)).sum()) // 2


def test_histograms_against_numpy_on_a_plain_loop():
    X, y = data(24)
    model = mlp(dims=(5, 16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    inst = Instruments(model, opt, BOTH, grad_tests_every=2, probe_batch=(X, y),
                       loss_fn=F.cross_entropy, hist_bins=30, hist_bins_2d=(12, 7))  # fmt: skip
    refs = {}

    def hook(step):  # the weights after `step` updates, as the instruments measure them
        if step % 2 == 0:
            refs[step] = _plain_gradients(model, X, y)

    run_loop(model, opt, [(X, y)] * 6, inst, hook=hook)
    inst.flush()
    hists = inst.histograms
    assert [s for s, _ in hists["grad_hist"]] == [2, 4, 6] == [s for s, _ in hists["grad_hist_2d"]]
    for (step, h1), (_, h2) in zip(hists["grad_hist"], hists["grad_hist_2d"]):
        g, w = (t.double().numpy() for t in refs[step])
        numel = g.size
        assert h1.counts.dtype == np.int64 and h1.counts.shape == (30,)
        assert h1.total == numel == h2.total and h2.counts.shape == (12, 7)
        # The adaptive ranges: +-max |g_ij| and +-max |w_j|, so nothing is clipped.
        r, wr = np.abs(g).max(), np.abs(w).max()
        assert h1.edges[0][0] == pytest.approx(-r, rel=1e-5)
        assert h1.edges[0][-1] == pytest.approx(r, rel=1e-5)
        assert h2.edges[1][-1] == pytest.approx(wr, rel=1e-6)
        ref1, _ = np.histogram(g.ravel(), bins=h1.edges[0].astype(np.float64))
        assert _mismatch(h1.counts, ref1) <= 2
        pairs = (g.ravel(), np.broadcast_to(w, g.shape).ravel())
        ref2, _, _ = np.histogram2d(*pairs, bins=[e.astype(np.float64) for e in h2.edges])
        assert _mismatch(h2.counts, ref2) <= 2


def test_the_one_shot_function_against_numpy_and_the_instruments():
    """gradient_histograms(model, ...) at the weights the instruments measured at step 2: the
    same counts and edges, and numpy's on a plain per-sample loop within edge rounding."""
    X, y = data(20)
    model = mlp(dims=(5, 16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    kw = dict(hist_bins=25, hist_bins_2d=(6, 9))
    inst = Instruments(model, opt, BOTH, grad_tests_every=2, probe_batch=(X, y),
                       loss_fn=F.cross_entropy, **kw)  # fmt: skip
    run_loop(model, opt, [(X, y)] * 2, inst)
    model.eval()
    once = gradient_histograms(model, as_batch_loss(F.cross_entropy), (X, y), chunk_size=7, **kw)
    inst.flush()
    for key in BOTH:
        measured = inst.histograms[key][-1][1]
        assert np.array_equal(once[key].counts, measured.counts), key
        for a, b in zip(once[key].edges, measured.edges):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    g, _ = (t.double().numpy() for t in _plain_gradients(model, X, y))
    ref, _ = np.histogram(g.ravel(), bins=once["grad_hist"].edges[0].astype(np.float64))
    assert once["grad_hist"].counts.shape == (25,) and _mismatch(once["grad_hist"].counts, ref) <= 2
    assert once["grad_hist_2d"].counts.shape == (6, 9) and once["grad_hist_2d"].total == g.size
    with pytest.raises(ValueError, match="hist_bins"):
        gradient_histograms(model, as_batch_loss(F.cross_entropy), (X, y), hist_bins=0)
    with pytest.raises(TypeError, match="hist_bins_2d"):
        gradient_histograms(model, as_batch_loss(F.cross_entropy), (X, y), hist_bins_2d=5)
    with pytest.raises(ValueError, match="hist_range"):
        gradient_histograms(model, as_batch_loss(F.cross_entropy), (X, y), hist_range=-1.0)


def test_per_tensor_histograms_against_numpy_and_their_sum():
    """hist_per_layer: each tensor's 1-D counts against numpy on that tensor's columns of
    a plain per-sample loop, on the shared bins; the tensors' counts add up to the total,
    for both kinds, also with a clipping range."""
    X, y = data(16)
    model = mlp(dims=(5, 16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    inst = Instruments(model, opt, BOTH, grad_tests_every=1, probe_batch=(X, y),
                       loss_fn=F.cross_entropy, hist_bins=15, hist_bins_2d=(6, 5),
                       hist_per_layer=True)  # fmt: skip
    run_loop(model, opt, [(X, y)], inst)
    inst.flush()
    hists = {k: v[-1][1] for k, v in inst.histograms.items()}
    names = [n for n, _ in model.named_parameters()]
    assert sorted(hists) == sorted([*BOTH, *(f"{k}/{n}" for k in BOTH for n in names)])
    g, _ = (t.double().numpy() for t in _plain_gradients(model, X, y))
    start = 0
    for name, p in model.named_parameters():
        cols = g[:, start : start + p.numel()]
        start += p.numel()
        h = hists[f"grad_hist/{name}"]
        np.testing.assert_array_equal(h.edges[0], hists["grad_hist"].edges[0])
        ref, _ = np.histogram(cols.ravel(), bins=h.edges[0].astype(np.float64))
        assert h.total == cols.size and _mismatch(h.counts, ref) <= 2, name
        assert hists[f"grad_hist_2d/{name}"].counts.shape == (6, 5)
    for kind in BOTH:
        total = sum(hists[f"{kind}/{n}"].counts for n in names)
        assert np.array_equal(total, hists[kind].counts), kind
    # A fixed range that clips: the tensors still add up to the total.
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    grads = torch.from_numpy(g).float()
    sizes = [p.numel() for p in model.parameters()]
    out = bin_gradients([grads[:7], grads[7:]], w, BOTH, HistSpec(9, (4, 3), 0.01), sizes)
    for kind in BOTH:
        assert torch.equal(out[f"{kind}/layers"][0].sum(0), out[kind][0]), kind


def test_the_same_counts_as_cockpit():
    """One step of Cockpit's GradHist1d and GradHist2d (BackPACK's BatchGrad) at the same
    weights, with a gradient range that clips (the edge bins take what lies beyond)."""
    cockpit = pytest.importorskip("cockpit")
    backpack = pytest.importorskip("backpack")
    from cockpit.quantities import GradHist1d, GradHist2d
    from cockpit.utils.schedules import linear

    X, y = data(32)
    model = mlp(dims=(5, 16, 3))
    names = [n for n, _ in model.named_parameters()]
    grads = [g for g, _ in per_sample_gradients(model, as_batch_loss(F.cross_entropy), (X, y),
                                                 names, chunk_size=10)]  # fmt: skip
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    r = 0.5 * torch.cat(grads).abs().max().item()
    wr = weights.abs().max().item()
    sizes = [p.numel() for p in model.parameters()]
    ours = bin_gradients(grads, weights, BOTH, HistSpec(20, (8, 10), r), sizes)

    theirs_model = backpack.extend(copy.deepcopy(model))
    loss_fn = backpack.extend(torch.nn.CrossEntropyLoss())
    quantities = [GradHist1d(linear(1), bins=20, range=(-r, r)),
                  GradHist2d(linear(1), bins=(8, 10), range=((-r, r), (-wr, wr)),
                             keep_individual=True)]  # fmt: skip
    cp = cockpit.Cockpit(theirs_model.parameters(), quantities=quantities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = theirs_model(X)
        loss = loss_fn(out, y)
        info = {"batch_size": len(X), "loss": loss, "optimizer": None,
                "individual_losses": F.cross_entropy(out, y, reduction="none")}  # fmt: skip
        with cp(0, info=info):
            loss.backward(create_graph=cp.create_graph(0))
    theirs = cp.get_output()[0]
    counts, edges = ours["grad_hist"]
    clipped = (torch.cat(grads).abs() > r).sum().item()
    assert clipped > 0  # the range clips, so the edge bins are exercised
    assert np.array_equal(counts.numpy(), np.asarray(theirs["GradHist1d"]["hist"]))
    np.testing.assert_allclose(edges[0].numpy(), theirs["GradHist1d"]["edges"], atol=1e-7)
    counts, edges = ours["grad_hist_2d"]
    grid = np.asarray(theirs["GradHist2d"]["hist"])
    assert np.array_equal(counts.view(8, 10).numpy(), grid) and grid.sum() == 32 * weights.numel()
    # Each parameter tensor apart (Cockpit's keep_individual): the same counts, tensor by tensor.
    layers, _ = ours["grad_hist_2d/layers"]
    assert theirs["GradHist2d"]["param_groups"] == len(sizes) == layers.shape[0]
    for i, block in enumerate(layers):
        mine = block.view(8, 10).numpy()
        assert np.array_equal(mine, np.asarray(theirs["GradHist2d"][f"param_{i}"]["hist"])), i
        assert mine.sum() == 32 * sizes[i]
    for e, t in zip(edges, theirs["GradHist2d"]["edges"]):
        np.testing.assert_allclose(e.numpy(), np.asarray(t), atol=1e-7)


def test_non_finite_values_and_the_range():
    nan, inf = float("nan"), float("inf")
    g = torch.tensor([[0.05, -0.4, nan, 1.0], [inf, -inf, 0.25, -1.0]])
    w = torch.tensor([0.5, -2.0, 1.0, nan])
    out = bin_gradients([g], w, BOTH, HistSpec(4, (2, 2)))
    counts, edges = (t.numpy() for t in (out["grad_hist"][0], out["grad_hist"][1][0]))
    # Range: the largest finite |g| (1.0); NaN dropped, +-inf in the edge bins.
    np.testing.assert_allclose(edges, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert counts.tolist() == [2, 1, 2, 2]  # [-inf, -1.0], [-0.4], [0.05, 0.25], [1.0, inf]
    grid = out["grad_hist_2d"][0].view(2, 2).numpy()
    # Rows: g < 0, g >= 0; columns: w < 0 (-2.0), w >= 0 (0.5, 1.0). NaN g or w: dropped.
    assert grid.tolist() == [[2, 0], [0, 3]]  # (-0.4, -2), (-inf, -2); (0.05, .5), (inf, .5), ...
    # A fixed range counts what lies beyond it in the edge bins.
    fixed = bin_gradients([g], w, ("grad_hist",), HistSpec(4, grad_range=0.2))
    assert fixed["grad_hist"][0].tolist() == [3, 0, 1, 3]
    np.testing.assert_allclose(fixed["grad_hist"][1][0].numpy(), [-0.2, -0.1, 0, 0.1, 0.2])
    zeros = bin_gradients([torch.zeros(3, 2)], torch.zeros(2), BOTH, HistSpec(3, (3, 1)))
    assert zeros["grad_hist"][0].tolist() == [0, 6, 0]  # all zero: no 0/0 range, no NaN
    assert zeros["grad_hist_2d"][0].tolist() == [0, 6, 0]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 9),
    bins=st.integers(1, 13),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1e-8, 1e-3, 1.0, 1e6]),
)
def test_every_finite_value_is_counted_once_in_its_bin(rows, cols, bins, seed, scale):
    g = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * scale
    w = torch.linspace(-1, 1, cols)
    out = bin_gradients(list(g.split(3)), w, BOTH, HistSpec(bins, (bins, 2)))
    counts, edges = out["grad_hist"][0].numpy(), out["grad_hist"][1][0].double().numpy()
    assert counts.sum() == rows * cols == out["grad_hist_2d"][0].sum().item()
    ref, _ = np.histogram(g.double().numpy().ravel(), bins=edges)
    assert _mismatch(counts, ref) <= 1
    assert np.array_equal(out["grad_hist_2d"][0].view(bins, 2).sum(1).numpy(), counts)


def test_several_slices_and_counts_past_float32_integers():
    # 2^24 + 3 equal values (one bin past float32's last exact integer), in 17 slices.
    n = (1 << 24) + 3
    g = torch.zeros(n, 1)
    w = torch.ones(1)
    out = bin_gradients([g[:5], g[5:]], w, ("grad_hist",), HistSpec(3))
    assert out["grad_hist"][0].tolist() == [0, n, 0]
    # Through the instruments (their one device-to-host copy): a 1-parameter model whose
    # per-sample gradients are all zero, on a probe batch of n samples.
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    x = torch.zeros(n, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    inst = Instruments(model, opt, ("grad_hist",), grad_tests_every=1, probe_batch=(x, x),
                       loss_fn=F.mse_loss, hist_bins=3)  # fmt: skip
    run_loop(model, opt, [(x[:2], x[:2])], inst, loss_fn=F.mse_loss)
    inst.flush()
    [(step, hist)] = inst.histograms["grad_hist"]
    assert step == 1 and hist.counts.tolist() == [0, n, 0] and hist.total == n


def _measured(**kw):
    X, y = data(16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    inst = Instruments(model, opt, ["loss", *BOTH], grad_tests_every=2, probe_batch=(X, y),
                       loss_fn=F.cross_entropy, **kw)  # fmt: skip
    run_loop(model, opt, [(X, y)] * 4, inst)
    inst.flush()
    return inst, model, opt


def test_histograms_survive_a_checkpoint_loaded_with_weights_only():
    inst, model, opt = _measured(hist_range=0.5)
    buf = io.BytesIO()
    torch.save(inst.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    again = Instruments(model, opt, ["loss", *BOTH], grad_tests_every=2,
                        probe_batch=data(16), loss_fn=F.cross_entropy)  # fmt: skip
    again.load_state_dict(state)
    for key in BOTH:
        a, b = inst.histograms[key], again.histograms[key]
        assert [s for s, _ in a] == [s for s, _ in b] == [2, 4]
        for (_, x), (_, z) in zip(a, b):
            assert np.array_equal(x.counts, z.counts) and x.counts.dtype == z.counts.dtype
            assert all(np.array_equal(e, f) for e, f in zip(x.edges, z.edges))
    assert inst.histograms["grad_hist"][0][1].edges[0][-1] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"hist_bins": 0}, ValueError, "hist_bins must be an integer >= 1, got 0"),
        ({"hist_bins": 2.5}, TypeError, "hist_bins"),
        ({"hist_bins_2d": (4,)}, TypeError, "hist_bins_2d must be a pair"),
        ({"hist_bins_2d": 40}, TypeError, "hist_bins_2d must be a pair"),
        ({"hist_bins_2d": (4, 0)}, ValueError, r"hist_bins_2d\[1\]"),
        ({"hist_range": -1.0}, ValueError, "hist_range"),
        ({"hist_range": 0.0}, ValueError, "hist_range"),
        ({"hist_range": float("inf")}, ValueError, "hist_range"),
        ({"hist_range": "wide"}, TypeError, "hist_range"),
        ({"quantities": ["grad_hist"]}, ValueError, "probe_batch"),
        ({"hist_per_layer": "yes"}, TypeError, "hist_per_layer"),
        ({"hist_per_layer": 1}, TypeError, "hist_per_layer"),
    ],
)
def test_bad_arguments_name_the_parameter(kw, error, match):
    model = mlp()
    kw = {"quantities": ["loss"], **kw}
    with pytest.raises(error, match=match):
        Instruments(model, torch.optim.SGD(model.parameters(), lr=0.1), **kw)


def test_the_figure_draws_every_measurement_and_the_last_2d_one():
    inst, _, _ = _measured()
    hists = inst.histograms
    figs = inst.figures()
    assert "grad_hist" in figs and isinstance(figs["grad_hist"], Figure)
    ax1, ax2 = figs["grad_hist"].axes[:2]
    assert len(ax1.patches) == 2  # one density step line per measurement
    last = hists["grad_hist_2d"][-1][1]
    assert f"step {hists['grad_hist_2d'][-1][0]}" in ax2.get_title()
    mesh = ax2.collections[0].get_array()
    assert mesh.sum() == last.total  # the last measurement's counts (transposed for drawing)
    # The density integrates to 1.
    h = hists["grad_hist"][-1][1]
    density, edges, _ = ax1.patches[-1].get_data()
    assert np.array_equal(edges, h.edges[0])
    assert float(np.nansum(density * np.diff(edges))) == pytest.approx(1.0)
    # Onto the caller's axes; the dashboard gains both panels.
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plots.grad_hist_figure(hists, axes=axes) is fig
    titles = [a.get_title() for a in plots.dashboard(inst.history, hists).axes]
    assert "Gradient elements" in titles and any(t.startswith("Gradient element against")
                                                  for t in titles)  # fmt: skip
    with pytest.raises(ValueError, match="grad_hist"):
        plots.grad_hist_figure({})
    only_1d = {"grad_hist": hists["grad_hist"]}
    assert len(plots.grad_hist_figure(only_1d).axes) >= 1


def test_the_per_tensor_figure_draws_each_tensors_last_histogram():
    X, y = data(12)
    model = mlp(dims=(5, 16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    inst = Instruments(model, opt, BOTH, grad_tests_every=1, probe_batch=(X, y),
                       loss_fn=F.cross_entropy, hist_bins=12, hist_per_layer=True)  # fmt: skip
    run_loop(model, opt, [(X, y)] * 2, inst)
    figs = inst.figures()  # flushes first: the last measurement is drawn
    names = [n for n, _ in model.named_parameters()]
    fig = figs["grad_hist_layers"]
    assert [ax.get_title() for ax in fig.axes] == names  # 4 tensors: one row of 4 panels
    assert "step 2" in fig.get_suptitle()
    for ax, name in zip(fig.axes, names):
        h = inst.histograms[f"grad_hist/{name}"][-1][1]
        density, edges, _ = ax.patches[0].get_data()
        assert float(np.nansum(density * np.diff(edges))) == pytest.approx(1.0)
        assert np.array_equal(edges, h.edges[0])
    # Only the 2-D kind per tensor: its grids instead.
    only_2d = {k: v for k, v in inst.histograms.items() if k.startswith("grad_hist_2d/")}
    fig2 = plots.grad_hist_layers_figure(only_2d)
    assert [ax.collections[0].get_array().sum() for ax in fig2.axes[: len(names)]] == [
        only_2d[f"grad_hist_2d/{n}"][-1][1].total for n in names
    ]
    with pytest.raises(ValueError, match="hist_per_layer"):
        plots.grad_hist_layers_figure({"grad_hist": inst.histograms["grad_hist"]})
    assert "grad_hist_layers" not in plots.figures({}, {"grad_hist": inst.histograms["grad_hist"]})


def test_a_histogram_is_a_plain_record():
    h = Histogram(np.array([1, 2], dtype=np.int64), (np.array([0.0, 0.5, 1.0]),))
    assert h.total == 3
    with pytest.raises(AttributeError):
        h.counts = np.zeros(2)  # frozen
