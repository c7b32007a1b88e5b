"""Figures of an :class:`~optiscope.instruments.Instruments` history (matplotlib, lazy).

Each function takes the ``history`` dict (key -> ``[(step, value), ...]``, as
``Instruments.history`` or the run's ``instruments.json``; the gradient histograms take
``Instruments.histograms``), returns a matplotlib Figure, never blocks (``show=True`` to
show) and saves to ``path`` when given.
"""

from __future__ import annotations

import math
import os
from typing import Any

from optiscope._internal.figures import finish_figure
from optiscope.instruments._alpha_plots import alpha_figure
from optiscope.instruments._hist_plots import (
    Histograms,
    grad_hist_figure,
    grad_hist_layers_figure,
    hist_1d_panel,
    hist_2d_panel,
    layer_keys,
)
from optiscope.instruments._plot_base import History, axes_for, require, series

__all__ = [
    "alpha_figure",
    "dashboard",
    "distance_figure",
    "figures",
    "grad_hist_figure",
    "grad_hist_layers_figure",
    "grad_tests_figure",
    "hessian_trace_figure",
    "noise_scale_figure",
    "sharpness_figure",
    "update_ratio_heatmap",
]


def sharpness_figure(
    history: History,
    *,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """Sharpness against its stability threshold (and the preconditioned pair, if any).

    Log scale. Edge of stability: under gradient descent the sharpness rises until it
    reaches 2/lr and then hovers there (Cohen et al. 2021); for Adam the preconditioned
    sharpness hovers at ``(2 + 2 beta1) / ((1 - beta1) lr)`` (Cohen et al. 2022).

    Raises:
        ValueError: The history has neither sharpness.

    Example:
        >>> h = {"sharpness": [(16, 3.0), (32, 9.0)],
        ...      "sharpness_threshold": [(16, 20.0), (32, 20.0)]}
        >>> len(sharpness_figure(h).axes[0].lines)
        2
    """
    if not history.get("sharpness") and not history.get("preconditioned_sharpness"):
        require(history, "sharpness", "sharpness")
    fig, ax = axes_for(ax, (7, 4.5))
    pairs = (
        ("sharpness", "sharpness_threshold", "sharpness", "threshold (2/lr)", "C0"),
        (
            "preconditioned_sharpness",
            "preconditioned_threshold",
            "preconditioned sharpness",
            "preconditioned threshold",
            "C1",
        ),
    )
    for key, thr, label, thr_label, color in pairs:
        if history.get(key):
            ax.plot(*series(history, key), color=color, marker=".", label=label)
        if history.get(thr):
            ax.plot(*series(history, thr), color=color, linestyle="--", label=thr_label)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("top Hessian eigenvalue")
    ax.set_title("Sharpness and the stability threshold")
    ax.legend()
    return finish_figure(fig, path, show)


def noise_scale_figure(
    history: History,
    *,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """The smoothed simple noise scale (~ critical batch size) with the batch size used.

    Batches far below the noise scale waste steps (more samples per step would help
    almost linearly); far above it they waste compute (McCandlish et al. 2018). Log
    scale. Where the ratio of the smoothed estimates is not positive (mostly a ``|G|^2``
    estimate at or below zero late in training, when the true gradient is small against
    the noise) it has no meaning: those steps are marked along the top instead of drawn.

    Raises:
        ValueError: The history has no noise scale.

    Example:
        >>> h = {"noise_scale": [(1, 50.0), (2, -60.0)], "batch_size": [(1, 32.0), (2, 32.0)]}
        >>> [line.get_label() for line in noise_scale_figure(h).axes[0].lines][1:]
        ['batch size', 'no estimate (B_simple <= 0)']
    """
    require(history, "noise_scale", "noise_scale")
    fig, ax = axes_for(ax, (7, 4.5))
    steps, values = series(history, "noise_scale")
    shown = [v if v > 0 and math.isfinite(v) else math.nan for v in values]
    ax.plot(steps, shown, label="noise scale B_simple (~ critical batch size)")
    if history.get("batch_size"):
        ax.plot(*series(history, "batch_size"), linestyle="--", color="k", label="batch size")
    ax.set_yscale("log")
    undefined = [s for s, v in zip(steps, shown) if math.isnan(v)]
    if undefined:
        ax.plot(undefined, [0.97] * len(undefined), "v", color="C3", markersize=4,
                transform=ax.get_xaxis_transform(),
                label="no estimate (B_simple <= 0)")  # fmt: skip
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("samples")
    ax.set_title("Gradient noise scale")
    ax.legend()
    return finish_figure(fig, path, show)


def update_ratio_heatmap(
    history: History,
    *,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """log10 of each parameter tensor's update-to-weight ratio over steps (a heatmap).

    A common rule of thumb is a ratio near 1e-3 per step; layers far above it move too
    fast, far below barely train.

    Raises:
        ValueError: The history has no per-layer update ratios.

    Example:
        >>> h = {"layers/w/update_ratio": [(1, 1e-3), (2, 2e-3)],
        ...      "layers/b/update_ratio": [(1, 1e-2), (2, 1e-2)]}
        >>> update_ratio_heatmap(h).axes[0].get_ylabel()
        'parameter'
    """
    keys = [k for k in history if k.startswith("layers/") and k.endswith("/update_ratio")]
    if not keys or not any(history[k] for k in keys):
        raise ValueError("history has no 'layers/<name>/update_ratio' values: measure 'layers'")
    import numpy as np

    steps = sorted({int(s) for k in keys for s, _ in history[k]})
    col = {s: i for i, s in enumerate(steps)}
    grid = np.full((len(keys), len(steps)), np.nan)
    for row, k in enumerate(keys):
        for s, v in history[k]:
            grid[row, col[int(s)]] = math.log10(v) if v > 0 and math.isfinite(v) else np.nan
    fig, ax = axes_for(ax, (8, max(2.5, 0.3 * len(keys) + 1.5)))
    image = ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        extent=(steps[0] - 0.5, steps[-1] + 0.5, len(keys) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([k[len("layers/") : -len("/update_ratio")] for k in keys], fontsize=7)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("parameter")
    ax.set_title("Update / weight norm ratio (log10)")
    fig.colorbar(image, ax=ax, label="log10 ratio")
    return finish_figure(fig, path, show)


def distance_figure(
    history: History,
    *,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """Distance of the weights from their initial values, ``|w - w_init|``, over steps.

    Raises:
        ValueError: The history has no distance.

    Example:
        >>> len(distance_figure({"distance": [(1, 0.1), (2, 0.3)]}).axes[0].lines)
        1
    """
    require(history, "distance", "distance")
    fig, ax = axes_for(ax, (7, 4.5))
    ax.plot(*series(history, "distance"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("|w - w_init|")
    ax.set_title("Distance from initialisation")
    return finish_figure(fig, path, show)


def hessian_trace_figure(
    history: History,
    *,
    ax: Any = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """The probe batch's Hessian trace over steps, with a band of two standard errors.

    The trace is the total curvature (the sum of all eigenvalues, negative ones
    included); against the sharpness it tells whether the curvature sits in a few top
    directions (trace near the top eigenvalue times a few) or is spread out.

    Raises:
        ValueError: The history has no Hessian trace.

    Example:
        >>> h = {"hessian_trace": [(16, 30.0), (32, 45.0)],
        ...      "hessian_trace/stderr": [(16, 1.0), (32, 2.0)]}
        >>> len(hessian_trace_figure(h).axes[0].collections)
        1
    """
    require(history, "hessian_trace", "hessian_trace")
    fig, ax = axes_for(ax, (7, 4.5))
    steps, values = series(history, "hessian_trace")
    ax.plot(steps, values, marker=".", color="C2", label="Hessian trace")
    errs = dict(zip(*series(history, "hessian_trace/stderr")))
    if errs:
        lo = [v - 2 * errs.get(s, 0.0) for s, v in zip(steps, values)]
        hi = [v + 2 * errs.get(s, 0.0) for s, v in zip(steps, values)]
        ax.fill_between(steps, lo, hi, color="C2", alpha=0.25, label="+- 2 standard errors")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("tr(H)")
    ax.set_title("Hessian trace of the probe batch")
    ax.legend()
    return finish_figure(fig, path, show)


GRAD_TEST_LINES = (
    ("grad_tests/norm_test", "norm test"),
    ("grad_tests/inner_product_test", "inner-product test"),
    ("grad_tests/orthogonality_test", "orthogonality test"),
)


def grad_tests_figure(
    history: History,
    *,
    axes: tuple[Any, Any] | None = None,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """Cockpit's gradient tests over steps (left) and the mean gradient signal-to-noise
    ratio (right).

    Each test is the smallest tolerance (``theta`` or ``nu``) the probe batch's gradient
    passes: the spread of the per-sample gradients relative to the mean gradient's norm,
    at this batch size. Below the dashed line at 1 the mean gradient is reliable at
    tolerance 1; well above it the step is mostly noise, and the adaptive-sampling rules
    of Byrd et al. 2012 and Bollapragada et al. 2018 would grow the batch. The GSNR falls
    as training reaches the noise floor.

    ``axes``: the two axes to draw into (the tests, the GSNR) instead of a new figure.

    Raises:
        ValueError: The history has no gradient tests.

    Example:
        >>> h = {"grad_tests/norm_test": [(16, 2.0), (32, 3.0)],
        ...      "grad_tests/gsnr": [(16, 0.5), (32, 0.2)]}
        >>> [len(a.lines) for a in grad_tests_figure(h).axes]
        [2, 1]
    """
    if not any(history.get(k) for k, _ in GRAD_TEST_LINES) and not history.get("grad_tests/gsnr"):
        require(history, "grad_tests/norm_test", "grad_tests")
    if axes is None:
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    else:
        (left, right), fig = axes, axes[0].figure
    for key, label in GRAD_TEST_LINES:
        if history.get(key):
            left.plot(*series(history, key), marker=".", label=label)
    left.axhline(1.0, color="k", linestyle="--", linewidth=1, label="tolerance 1")
    if all(v > 0 for k, _ in GRAD_TEST_LINES for v in series(history, k)[1]):
        left.set_yscale("log")
    left.set_xlabel("optimizer step")
    left.set_ylabel("smallest tolerance passed")
    left.set_title("Gradient tests")
    left.legend()
    if history.get("grad_tests/gsnr"):
        right.plot(*series(history, "grad_tests/gsnr"), marker=".", color="C3")
    right.set_xlabel("optimizer step")
    right.set_ylabel("mean GSNR")
    right.set_title("Gradient signal-to-noise ratio")
    return finish_figure(fig, path, show)


def _loss_panel(history: History, ax: Any) -> None:
    """The loss (left axis) and the gradient norm (right axis, log) over steps."""
    if history.get("loss"):
        ax.plot(*series(history, "loss"), color="C0", label="loss")
        ax.set_ylabel("loss", color="C0")
    if history.get("grad_norm"):
        right = ax.twinx() if history.get("loss") else ax
        right.plot(*series(history, "grad_norm"), color="C1", label="gradient norm")
        right.set_ylabel("gradient norm", color="C1")
        if all(v > 0 for v in series(history, "grad_norm")[1]):
            right.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_title("Loss and gradient norm")


def dashboard(
    history: History,
    histograms: Histograms | None = None,
    *,
    path: str | os.PathLike | None = None,
    show: bool = False,
) -> Any:
    """Every measured quantity on one page, like Cockpit's dashboard.

    One panel each, for what the history holds: loss and gradient norm, sharpness
    against its threshold, the Hessian trace, the noise scale, the distance from init,
    alpha, the per-layer update ratios, the gradient tests and the GSNR, and the gradient
    histograms when given (the figures of this module, drawn into a grid).

    Raises:
        ValueError: The history holds nothing to draw.

    Example:
        >>> h = {"loss": [(1, 2.0), (2, 1.5)], "distance": [(1, 0.1), (2, 0.3)]}
        >>> [a.get_title() for a in dashboard(h).axes if a.get_title()]
        ['Loss and gradient norm', 'Distance from initialisation']
    """
    panels: list[Any] = []
    if history.get("loss") or history.get("grad_norm"):
        panels.append(lambda ax: _loss_panel(history, ax))
    for key, draw in (
        ("sharpness", sharpness_figure),
        ("hessian_trace", hessian_trace_figure),
        ("noise_scale", noise_scale_figure),
        ("distance", distance_figure),
        ("alpha", alpha_figure),
    ):
        if history.get(key) or (key == "sharpness" and history.get("preconditioned_sharpness")):
            panels.append(lambda ax, draw=draw: draw(history, ax=ax))
    if any(k.endswith("/update_ratio") and v for k, v in history.items()):
        panels.append(lambda ax: update_ratio_heatmap(history, ax=ax))
    tests = any(k.startswith("grad_tests/") and v for k, v in history.items())
    for key, draw_hist in (("grad_hist", hist_1d_panel), ("grad_hist_2d", hist_2d_panel)):
        if histograms and histograms.get(key):
            panels.append(lambda ax, key=key, draw=draw_hist: draw(histograms[key], ax))
    if not panels and not tests:
        raise ValueError("history has nothing to draw: measure some quantities first")
    import matplotlib.pyplot as plt

    n = len(panels) + 2 * tests
    cols = 2 if n <= 4 else 3
    rows = math.ceil(n / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    cells = list(grid.flat)
    for ax, draw in zip(cells, panels):
        draw(ax)
    if tests:
        grad_tests_figure(history, axes=(cells[len(panels)], cells[len(panels) + 1]))
    for ax in cells[n:]:
        ax.axis("off")
    fig.suptitle("Training dynamics")
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # leave the suptitle its own row
    return finish_figure(fig, path, show)


def figures(history: History, histograms: Histograms | None = None) -> dict[str, Any]:
    """``{"sharpness", "hessian_trace", "noise_scale", "update_ratios", "distance", "alpha",
    "grad_tests", "grad_hist", "grad_hist_layers"}`` for what was measured.

    Example:
        >>> sorted(figures({"distance": [(1, 0.1)]}))
        ['distance']
    """
    out: dict[str, Any] = {}
    if history.get("sharpness") or history.get("preconditioned_sharpness"):
        out["sharpness"] = sharpness_figure(history)
    if history.get("hessian_trace"):
        out["hessian_trace"] = hessian_trace_figure(history)
    if history.get("noise_scale"):
        out["noise_scale"] = noise_scale_figure(history)
    if any(k.endswith("/update_ratio") and v for k, v in history.items()):
        out["update_ratios"] = update_ratio_heatmap(history)
    if history.get("distance"):
        out["distance"] = distance_figure(history)
    if history.get("alpha"):
        out["alpha"] = alpha_figure(history)
    if any(history.get(k) for k, _ in GRAD_TEST_LINES) or history.get("grad_tests/gsnr"):
        out["grad_tests"] = grad_tests_figure(history)
    if histograms and (histograms.get("grad_hist") or histograms.get("grad_hist_2d")):
        out["grad_hist"] = grad_hist_figure(histograms)
    if histograms and layer_keys(histograms):
        out["grad_hist_layers"] = grad_hist_layers_figure(histograms)
    return out
