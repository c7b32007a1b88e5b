"""Bad arguments fail at construction with the parameter named; plots need their keys."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope.instruments import QUANTITIES, Instruments, plots
from tests.instruments._helpers import data, mlp

matplotlib.use("Agg")


def _make(**kw):
    model = mlp()
    return Instruments(model, torch.optim.SGD(model.parameters(), lr=0.1), **kw)


@settings(max_examples=25, deadline=None)
@given(name=st.text(min_size=1, max_size=12).filter(lambda s: s not in QUANTITIES))
def test_unknown_quantity(name):
    with pytest.raises(ValueError, match="unknown quantity"):
        _make(quantities=[name])


@settings(max_examples=25, deadline=None)
@given(
    key=st.sampled_from(["every", "sharpness_every", "grad_tests_every", "sharpness_iters"]),
    value=st.integers(max_value=0),
)
def test_interval_below_one(key, value):
    with pytest.raises(ValueError, match=key):
        _make(**{key: value})


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"every": 1.5}, TypeError, "every"),
        ({"every": True}, TypeError, "every"),
        ({"quantities": "loss"}, TypeError, "quantities"),
        ({"quantities": []}, ValueError, "quantities"),
        ({"smoothing": 1.0}, ValueError, "smoothing"),
        ({"split": 1}, ValueError, "split"),
        ({"noise_source": "nccl"}, ValueError, "noise_source"),
        ({"quantities": ["noise_scale"]}, ValueError, "second batch size"),
        ({"quantities": ["noise_scale"], "noise_source": "ddp"}, ValueError, "DistributedData"),
        ({"quantities": ["noise_scale"], "noise_source": "split"}, ValueError, "probe_batch"),
        (
            {
                "quantities": ["noise_scale"],
                "noise_source": "micro_batches",
                "accumulation_steps": 1,
            },
            ValueError,
            "accumulation_steps",
        ),
        ({"quantities": ["sharpness"]}, ValueError, "probe_batch"),
        ({"quantities": ["grad_tests"]}, ValueError, "probe_batch"),
        ({"quantities": ["preconditioned_sharpness"], "probe_batch": data(4)}, ValueError, "Adam"),
        (
            {"loss_fn": torch.nn.functional.mse_loss, "batch_loss": lambda m, b: 0},
            ValueError,
            "loss_fn",
        ),
        ({"batch_loss": 3}, TypeError, "batch_loss"),
        ({"quantities": ["grad_tests"], "probe_batch": data(1)}, ValueError, "2 samples"),
        ({"quantities": ["alpha"]}, ValueError, "probe_batch"),
        ({"quantities": ["alpha"], "probe_batch": data(1)}, ValueError, "alpha needs .* 2 samples"),
        ({"ddp_model": torch.nn.Linear(2, 2)}, TypeError, "ddp_model must be a Distributed"),
        ({"quantities": ["noise_scale"], "noise_source": "ddp"}, ValueError, "ddp_model"),
    ],
)
def test_bad_arguments(kw, error, match):
    with pytest.raises(error, match=match):
        _make(**kw)


def test_no_trainable_parameters():
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Instruments(
            model,
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
            ["sharpness"],
            probe_batch=data(4),
        )
    with pytest.raises(TypeError, match="model"):
        Instruments("net", torch.optim.SGD(mlp().parameters(), lr=0.1))


def test_plots_draw_what_was_measured_and_refuse_the_rest():
    h = {
        "sharpness": [(2, 1.0), (4, 5.0)],
        "sharpness_threshold": [(2, 20.0), (4, 20.0)],
        "noise_scale": [(1, 30.0), (2, 40.0)],
        "batch_size": [(1, 16.0), (2, 16.0)],
        "layers/a/update_ratio": [(1, 1e-3), (2, float("nan"))],
        "layers/b/update_ratio": [(1, 1e-2), (2, 1e-4)],
        "distance": [(1, 0.1), (2, 0.2)],
        "grad_tests/norm_test": [(2, 3.0), (4, 2.0)],
        "grad_tests/inner_product_test": [(2, 0.5), (4, 0.25)],
        "grad_tests/orthogonality_test": [(2, 4.0), (4, 5.0)],
        "grad_tests/gsnr": [(2, 0.3), (4, 0.1)],
        "hessian_trace": [(2, 12.0), (4, 20.0)],
        "hessian_trace/stderr": [(2, 1.0), (4, 0.5)],
        "alpha": [(2, -0.4), (4, 7.5), (6, -9.0), (8, 0.1)],
    }
    figs = plots.figures(h)
    assert sorted(figs) == ["alpha", "distance", "grad_tests", "hessian_trace", "noise_scale",
                            "sharpness", "update_ratios"]  # fmt: skip
    titles = [a.get_title() for a in plots.dashboard(h).axes if a.get_title()]
    assert titles == [
        "Sharpness and the stability threshold", "Hessian trace of the probe batch",
        "Gradient noise scale", "Distance from initialisation", "Effective step size alpha",
        "Update / weight norm ratio (log10)", "Gradient tests", "Gradient signal-to-noise ratio",
    ]  # fmt: skip
    band = figs["hessian_trace"].axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(10.0) and max(band) == pytest.approx(21.0)
    tests_ax, gsnr_ax = figs["grad_tests"].axes[:2]
    assert [list(line.get_ydata()) for line in tests_ax.lines[:3]] == [[3.0, 2.0], [0.5, 0.25],
                                                                      [4.0, 5.0]]  # fmt: skip
    assert list(tests_ax.lines[3].get_ydata()) == [1.0, 1.0]  # the tolerance-1 line
    assert tests_ax.get_yscale() == "log" and list(gsnr_ax.lines[0].get_ydata()) == [0.3, 0.1]
    grid = figs["update_ratios"].axes[0].images[0].get_array()
    assert grid.shape == (2, 2) and grid[0, 0] == pytest.approx(-3.0) and grid.mask[0, 1]
    line = figs["sharpness"].axes[0].lines[1]
    assert list(line.get_ydata()) == [20.0, 20.0]
    # Alpha: values within +-3 as points, the rest on the edge (up, then down).
    inside, up, down = figs["alpha"].axes[0].lines[:3]
    assert list(inside.get_ydata()) == [-0.4, 0.1] and list(up.get_xdata()) == [4]
    assert list(up.get_ydata()) == [3.0] and list(down.get_ydata()) == [-3.0]
    for fn in (
        plots.sharpness_figure,
        plots.noise_scale_figure,
        plots.update_ratio_heatmap,
        plots.distance_figure,
        plots.grad_tests_figure,
        plots.hessian_trace_figure,
        plots.alpha_figure,
    ):
        with pytest.raises(ValueError, match="history has no"):
            fn({})
    assert plots.figures({}) == {}
    with pytest.raises(ValueError, match="nothing to draw"):
        plots.dashboard({})
