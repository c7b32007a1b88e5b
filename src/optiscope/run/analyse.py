"""Analyse: landscape and curvature figures around a model's trained weights.

The stage after training. Everything here calls :mod:`optiscope.landscape` and
:mod:`optiscope.curvature` (which restore the model bit-for-bit) and only decides what to
compute, at which resolution, and how to caption it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from optiscope._internal.accuracy import count_correct, infer_task
from optiscope._internal.restore import preserved
from optiscope.batch_loss import as_batch_loss, logits_of, to_device
from optiscope.run.figures import FigureSpec, save_figure, surface_plotly_json
from optiscope.run.schema import CurvatureSection, LandscapeSection

__all__ = [
    "Analysis",
    "evaluation_data",
    "scores_accuracy",
    "landscape_figures",
    "curvature_figures",
]

# Concatenate the evaluation split into one tensor pair up to this many samples: the
# landscape engine then evaluates a whole grid chunk per pass instead of per batch.
_MAX_TENSOR_SAMPLES = 16384


@dataclass
class Analysis:
    """Figures plus the numbers they summarise (for the report's table)."""

    figures: list[FigureSpec] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def evaluation_data(loader: Iterable, max_batches: int = 0) -> tuple[Any, Any]:
    """``(data, targets)`` for the landscape and curvature calls.

    A small split of ``(inputs, targets)`` tensor batches becomes one tensor pair (fast:
    the landscape engine then evaluates a grid chunk per pass instead of per batch).
    Anything else (dict batches, several inputs, a large split) stays the loader, with
    targets None, read up to ``max_batches`` batches by the callee.

    Raises:
        ValueError: The split yields no batches.
    """
    inputs, targets, n = [], [], 0
    for k, batch in enumerate(loader):
        if max_batches and k >= max_batches:
            break
        pair = isinstance(batch, (tuple, list)) and len(batch) == 2
        if not (pair and all(isinstance(t, torch.Tensor) for t in batch)):
            return loader, None
        inputs.append(batch[0])
        targets.append(batch[1])
        n += batch[0].shape[0]
        if n > _MAX_TENSOR_SAMPLES:
            return loader, None
    if not inputs:
        raise ValueError("the evaluation split is empty: it yielded no batches")
    return torch.cat(inputs), torch.cat(targets)


def scores_accuracy(model: nn.Module, loss_fn: Any, batch: Any) -> bool:
    """Whether accuracy means something for this model, loss and batch layout.

    Runs the model once on ``batch`` (eval mode, no gradients, model restored) and asks
    the project's accuracy rules (:mod:`optiscope._internal.accuracy`) whether its output
    can be scored against the batch's labels: not for regression, a model whose output has
    no logits, or shapes that do not match.

    Example:
        >>> import torch
        >>> x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
        >>> net = torch.nn.Linear(3, 2)
        >>> scores_accuracy(net, torch.nn.CrossEntropyLoss(), (x, y))
        True
        >>> scores_accuracy(net, torch.nn.MSELoss(), (x, torch.zeros(4, 2)))
        False
    """
    bl = as_batch_loss(loss_fn)
    device = next(model.parameters()).device
    with preserved(model), torch.no_grad():
        model.eval()
        out = bl.evaluate(model, to_device(batch, device))
    logits = logits_of(out.output)
    if logits is None or not isinstance(out.target, torch.Tensor):
        return False
    task = infer_task(loss_fn, logits, out.target)
    return count_correct(logits, out.target, task) is not None


def _progress(echo: Callable[[str], None], what: str, t0: float) -> None:
    echo(f"  {what} ({time.perf_counter() - t0:.1f}s)")


@dataclass
class _Grid:
    """What every landscape evaluation of one analysis shares: model, loss, data, metrics."""

    model: nn.Module
    loss_fn: Any
    data: Any
    targets: Any
    metrics: tuple[str, ...]
    options: dict[str, Any]
    fig_dir: Path

    def line(self, direction: Any, span: tuple, points: int) -> Any:
        from optiscope import landscape as L

        return L.line(self.model, self.loss_fn, self.data, self.targets, direction=direction,
                      alpha_range=span, num_points=points, metrics=self.metrics,
                      **self.options)  # fmt: skip

    def plane(self, d1: Any, d2: Any, span1: tuple, span2: tuple | None, points: int) -> Any:
        from optiscope import landscape as L

        return L.plane(self.model, self.loss_fn, self.data, self.targets, d1=d1, d2=d2,
                       alpha_range=span1, beta_range=span2, num_points=points,
                       metrics=self.metrics, **self.options)  # fmt: skip


def landscape_figures(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | None,
    data: Any,
    targets: Any,
    cfg: LandscapeSection,
    fig_dir: Path,
    *,
    trajectory: Sequence[dict[str, torch.Tensor]] = (),
    echo: Callable[[str], None] = print,
    distributed: bool | None = None,
) -> Analysis:
    """1-D lines, a 2-D contour and 3-D surface, and the PCA trajectory plane.

    Args:
        model: The trained network (left exactly as it was).
        loss_fn: Its loss (None: the model computes it; see :mod:`optiscope.batch_loss`).
        data: Inputs tensor, or a loader (then ``targets`` is None).
        targets: Labels for tensor ``data``.
        cfg: Which figures and how fine.
        fig_dir: Where the PNG/JSON files go.
        trajectory: Parameter snapshots over training (oldest first), for the PCA plane.
        echo: Progress lines.
        distributed: Shard the grids over the process group (None: whenever one is
            initialised; every rank must then call this). False when one rank alone
            analyses, as the Lightning and Hugging Face integrations do.

    Returns:
        The figures and numbers (sharpness, explained variance).
    """
    from optiscope import landscape as L

    out = Analysis()
    t0 = time.perf_counter()
    first = (data[:1], targets[:1]) if targets is not None else next(iter(data))
    metrics = ("loss", "accuracy") if scores_accuracy(model, loss_fn, first) else ("loss",)
    options = {"max_batches": cfg.max_batches or None, "progress": False,
               "device": next(model.parameters()).device}  # fmt: skip
    if distributed is not None:
        options["distributed"] = distributed
    grid = _Grid(model, loss_fn, data, targets, metrics, options, fig_dir)
    n = max(cfg.num_directions, 2 if (cfg.plane or cfg.surface) else 1)
    dirs = L.random_directions(
        model, n, normalization=cfg.normalization, seed=cfg.seed, orthogonal=False
    )
    fig_dir.mkdir(parents=True, exist_ok=True)
    if cfg.line:
        _line_figure(grid, dirs[: cfg.num_directions], cfg, out)
        _progress(echo, f"1-D landscape: {cfg.num_directions} x {cfg.line_points} points", t0)
    if cfg.plane or cfg.surface:
        _plane_figures(grid, dirs[0], dirs[1], cfg, out)
        _progress(echo, f"2-D landscape: {cfg.plane_points}x{cfg.plane_points} points", t0)
    if cfg.trajectory:
        spec = _trajectory_figure(grid, cfg, trajectory, out)
        if spec is not None:
            out.figures.append(spec)
            _progress(echo, f"PCA trajectory plane: {len(trajectory)} snapshots", t0)
    out.seconds = time.perf_counter() - t0
    return out


def _line_figure(grid: _Grid, dirs: Sequence[Any], cfg: LandscapeSection, out: Analysis) -> None:
    import matplotlib.pyplot as plt

    from optiscope import landscape as L

    norm = cfg.normalization
    fig, ax = plt.subplots(figsize=(8, 5))
    sharp = []
    for k, d in enumerate(dirs):
        ls = grid.line(d, tuple(cfg.alpha_range), cfg.line_points)
        L.plot_line(ls, ax=ax, label=f"direction {k + 1}")
        sharp.append(ls.sharpness().curvature[0])
        if k == 0:
            ls.save(grid.fig_dir / "line_1.npz")
    ax.set_title(f"Loss along {len(sharp)} random {norm}-normalised directions")
    out.figures.append(
        FigureSpec(
            "1-D loss along random directions",
            f"Loss at theta + alpha * d for {len(sharp)} Gaussian directions with "
            f"{norm}-wise normalisation (Li et al. 2018); a wide, flat basin around "
            "alpha = 0 means the minimum is robust to perturbation, and similar curves "
            "mean the geometry does not depend on the direction drawn.",
            save_figure(fig, grid.fig_dir / "landscape_1d.png"),
        )
    )
    out.numbers["line curvature (quadratic fit at 0)"] = float(np.median(sharp))


def _plane_figures(grid: _Grid, d1: Any, d2: Any, cfg: LandscapeSection, out: Analysis) -> None:
    from optiscope import landscape as L

    ls = grid.plane(d1, d2, tuple(cfg.alpha_range), None, cfg.plane_points)
    ls.save(grid.fig_dir / "plane.npz")
    log = bool(ls.loss.max() > 20 * max(ls.loss.min(), 1e-12))
    if cfg.plane:
        fig = L.plot_contour(ls, log=log)
        fig.axes[0].set_title("Loss contour around the final weights")
        out.figures.append(
            FigureSpec(
                "2-D loss contour (random directions)",
                "Contours of the loss on the plane spanned by two filter-normalised "
                "random directions, final weights at the centre, direction 1 on x; "
                "round, evenly spaced contours mean a well-conditioned basin, "
                "stretched ones an anisotropic (ill-conditioned) one."
                + (" Colours are log10 of the loss." if log else ""),
                save_figure(fig, grid.fig_dir / "landscape_contour.png"),
            )
        )
    if not cfg.surface:
        return
    out.figures.append(
        FigureSpec(
            "3-D loss surface",
            "The same plane as a surface: look for a single smooth bowl (convex-looking, "
            "easy to optimise) rather than a chaotic, many-valleyed one.",
            save_figure(L.plot_surface(ls, log=log), grid.fig_dir / "landscape_surface.png"),
        )
    )
    try:
        path = surface_plotly_json(
            ls.alphas, ls.betas, ls.loss, title="Loss surface (drag to rotate)",
            path=grid.fig_dir / "landscape_surface.plotly.json", log=log,
        )  # fmt: skip
    except ModuleNotFoundError as e:
        if e.name != "plotly" and not (e.name or "").startswith("plotly."):
            raise
        out.notes.append("interactive surface skipped: plotly is not installed")
        return
    out.figures.append(
        FigureSpec(
            "Interactive loss surface",
            "Rotate and zoom the surface; hover for the loss at each grid point.",
            path,
            "plotly",
        )
    )


def _trajectory_figure(
    grid: _Grid, cfg: LandscapeSection, trajectory: Sequence[dict[str, torch.Tensor]],
    out: Analysis,
) -> FigureSpec | None:  # fmt: skip
    from optiscope import landscape as L

    model = grid.model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    states = [{n: s[n] for n in names if n in s} for s in trajectory]
    if len(states) < 3:
        out.notes.append(
            f"trajectory plane skipped: {len(states)} weight snapshots (needs at least 3 epochs)"
        )
        return None
    # Snapshots live on the CPU; compare them with CPU copies of the final weights and
    # move the resulting directions to the model for evaluation.
    final = {n: p.detach().cpu() for n, p in model.named_parameters() if n in names}
    pca = L.pca_directions(final, states, names=names)
    coords = L.project_trajectory(final, states, pca.d1, pca.d2)
    device = next(model.parameters()).device
    d1 = {k: v.to(device) for k, v in pca.d1.items()}
    d2 = {k: v.to(device) for k, v in pca.d2.items()}
    # The PCA directions are unit vectors, so the plane must be sized to the path.
    reach = np.abs(coords).max(axis=0) * 1.25 + 1e-8
    ls = grid.plane(d1, d2, (-reach[0], reach[0]), (-reach[1], reach[1]), cfg.plane_points)
    ls.save(grid.fig_dir / "trajectory_plane.npz")
    log = bool(ls.loss.max() > 20 * max(ls.loss.min(), 1e-12))
    fig = L.plot_trajectory(ls, coords, explained=pca.explained_variance_ratio, log=log)
    ev = pca.explained_variance_ratio
    out.numbers["trajectory variance explained by PC1+PC2"] = float(ev[0] + ev[1])
    return FigureSpec(
        "Training trajectory on the PCA plane",
        f"The weights after each epoch projected onto the top two principal directions of "
        f"the path (together {100 * (ev[0] + ev[1]):.0f}% of its variance), over the loss "
        "on that plane; a path that runs straight down the contours means the optimiser "
        "found a direct route, zig-zags across a valley mean oscillation.",
        save_figure(fig, grid.fig_dir / "trajectory_pca.png"),
    )


def curvature_figures(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | None,
    data: Any,
    targets: Any,
    cfg: CurvatureSection,
    fig_dir: Path,
    *,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> Analysis:
    """Top Hessian eigenvalue(s), Hutchinson trace, and the loss along the sharpest direction.

    Returns:
        The figures (loss along the top eigenvector beside a random direction) and numbers.
    """
    from optiscope import curvature as C

    out = Analysis()
    t0 = time.perf_counter()
    mb = cfg.max_batches or None
    eig = C.hessian_eigenvalues(
        model, loss_fn, data, targets, top_k=cfg.top_k, max_iter=cfg.max_iter, seed=seed,
        max_batches=mb,
    )  # fmt: skip
    values = [float(v) for v in eig.eigenvalues]
    out.numbers["top Hessian eigenvalue"] = values[0]
    if len(values) > 1:
        out.numbers["top Hessian eigenvalues"] = values
    if not eig.converged:
        out.notes.append(
            f"Hessian eigenvalue iteration stopped at max_iter={cfg.max_iter} before meeting "
            "its tolerance"
        )
    _progress(echo, f"top Hessian eigenvalue {values[0]:.4g}", t0)
    if cfg.trace_samples:
        tr = C.hessian_trace(
            model, loss_fn, data, targets, max_iter=cfg.trace_samples, seed=seed, max_batches=mb
        )
        out.numbers["Hessian trace"] = float(tr.trace)
        out.numbers["Hessian trace stderr"] = float(tr.stderr)
        _progress(echo, f"Hessian trace {tr.trace:.4g} +- {tr.stderr:.2g}", t0)
    if cfg.layerwise:
        layers = C.layerwise_curvature(
            model, loss_fn, data, targets, max_iter=cfg.max_iter, seed=seed,
            trace_samples=max(cfg.trace_samples, 2), max_batches=mb,
        )  # fmt: skip
        out.numbers["per-layer Hessian"] = {
            name: [lc.top_eigenvalue, lc.trace, lc.num_params] for name, lc in layers.items()
        }
        _progress(echo, f"per-layer curvature of {len(layers)} layers", t0)
    grid = _Grid(model, loss_fn, data, targets, ("loss",),
                 {"max_batches": mb, "progress": False, "distributed": False}, fig_dir)  # fmt: skip
    out.figures.append(_sharpest_direction_figure(grid, eig.eigenvectors[0], values[0], seed))
    out.seconds = time.perf_counter() - t0
    return out


def _sharpest_direction_figure(grid: _Grid, top: Any, lam: float, seed: int) -> FigureSpec:
    # The loss along the sharpest direction next to a random unit direction of the same
    # norm shows what the eigenvalue means: how much faster the loss rises there.
    import matplotlib.pyplot as plt

    from optiscope import landscape as L

    rnd = L.random_direction(grid.model, normalization="model", seed=seed)
    scale = float(torch.sqrt(sum((v.double() ** 2).sum() for v in rnd.values())))
    rnd = {k: v / scale for k, v in rnd.items()}
    # Out to where the quadratic model predicts a rise of one nat along the sharpest direction.
    radius = (2.0 / max(abs(lam), 1e-8)) ** 0.5
    fig, ax = plt.subplots(figsize=(8, 5))
    centre = None
    for label, d in (("top Hessian eigenvector", top), ("random unit direction", rnd)):
        # Only rank 0 computes curvature under torchrun, so these lines are not sharded.
        ls = grid.line(d, (-radius, radius), 41)
        L.plot_line(ls, ax=ax, label=label)
        centre = ls.loss[len(ls.loss) // 2] if centre is None else centre
    a = np.linspace(-radius, radius, 101)
    ax.plot(a, centre + 0.5 * lam * a**2, "k:", label="quadratic model L0 + lambda a^2 / 2")
    ax.legend()
    ax.set_title(f"Loss along the sharpest direction (lambda_max = {lam:.3g})")
    return FigureSpec(
        "Loss along the top Hessian eigenvector",
        "The loss along the unit eigenvector of the largest Hessian eigenvalue next to a "
        "random unit direction, with the quadratic model lambda_max * alpha^2 / 2 dotted; "
        "the gap between the curves is how much sharper the sharpest direction is, and "
        "where the loss leaves the dotted line the quadratic picture stops holding.",
        save_figure(fig, grid.fig_dir / "hessian_top_direction.png"),
    )
