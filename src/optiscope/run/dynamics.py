"""Training dynamics: the ``[instruments]`` table built into a callback, its history and figures.

``[instruments]`` turns on :mod:`optiscope.instruments` for a run: :func:`instruments_callback`
builds the trainer callback (every problem a ConfigError naming the key, raised before the
run directory is touched), :func:`write_history` writes ``instruments.json`` (atomically,
rank 0 only), and :func:`dynamics_figures` draws its figures with the instruments' own plot
functions, each with the caption the report shows.

Example:
    >>> from optiscope.run.config import parse_config
    >>> from optiscope.run.build import build_components
    >>> cfg = parse_config("[instruments]\\nenabled = true")
    >>> type(instruments_callback(cfg, build_components(cfg))).__name__
    'InstrumentsCallback'
    >>> instruments_callback(parse_config(""), build_components(parse_config(""))) is None
    True
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from optiscope._internal.atomic import atomic_write
from optiscope.run.build import Components
from optiscope.run.config import Config, ConfigError
from optiscope.run.figures import FigureSpec, save_figure

__all__ = [
    "instruments_callback",
    "resolve_noise_source",
    "probe_batch",
    "write_history",
    "load_history",
    "dynamics_numbers",
    "dynamics_figures",
    "instruments_outputs",
]

History = dict[str, list[tuple[int, float]]]


def _world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_noise_source(cfg: Config, world: int | None = None) -> str:
    """Where the noise scale's two batch sizes come from for this run.

    ``auto`` takes what is free: the micro-batches under gradient accumulation, else each
    rank's gradient against the all-reduced one under DDP, else two halves of the probe
    batch (an extra forward and backward at the noise-scale interval).

    Raises:
        ConfigError: ``ddp`` without several processes, ``micro_batches`` without
            ``[train] grad_accum_steps > 1``.

    Example:
        >>> from optiscope.run.config import parse_config
        >>> resolve_noise_source(parse_config("[train]\\ngrad_accum_steps = 2"), world=1)
        'micro_batches'
        >>> resolve_noise_source(parse_config(""), world=1)
        'split'
    """
    world = _world_size() if world is None else world
    source, accum = cfg.instruments.noise_source, cfg.train.grad_accum_steps
    if source == "auto":
        return "micro_batches" if accum > 1 else "ddp" if world > 1 else "split"
    if source == "ddp" and world < 2:
        raise ConfigError(
            "[instruments] noise_source: 'ddp' needs several processes (run under torchrun), "
            "or use 'auto', 'micro_batches' or 'split'"
        )
    if source == "micro_batches" and accum < 2:
        raise ConfigError(
            "[instruments] noise_source: 'micro_batches' needs [train] grad_accum_steps > 1"
        )
    return source


def probe_batch(comps: Components, size: int) -> Any:
    """The first ``size`` training samples as one batch on the run's device.

    Read in dataset order and collated as the train loader does; no random number is
    drawn, so the training batches are the same with or without a probe batch.

    Raises:
        ConfigError: The train loader has no dataset to take the samples from.
    """
    from torch.utils.data import default_collate

    from optiscope.batch_loss import to_device

    dataset = getattr(comps.train_loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__"):
        raise ConfigError(
            "[instruments] probe_batch_size: the train loader has no indexable .dataset to "
            "take a probe batch from; use 0 (the first training batch)"
        )
    # Indexed and collated directly: a DataLoader iterator would draw its base seed from
    # the global RNG and so change the shuffling of training.
    collate = getattr(comps.train_loader, "collate_fn", None) or default_collate
    batch = collate([dataset[i] for i in range(min(size, len(dataset)))])
    return to_device(batch, comps.device)


def instruments_callback(cfg: Config, comps: Components, world: int | None = None) -> Any:
    """The trainer callback ``[instruments]`` describes, or None when it is off.

    Args:
        cfg: The run config.
        comps: The built run (its model, loss and loaders).
        world: Processes in the run (default: from torch.distributed or ``WORLD_SIZE``).

    Returns:
        An :class:`optiscope.instruments.InstrumentsCallback`, or None.

    Raises:
        ConfigError: A quantity the run cannot measure (sharpness without trainable
            parameters, a noise scale without a second batch size) or a value the
            instruments refuse; the message names the key.
    """
    inst = cfg.instruments
    if not inst.enabled:
        return None
    from optiscope.instruments import InstrumentsCallback
    from optiscope.instruments._options import PROBED

    quantities = tuple(inst.quantities)
    if any(q in quantities for q in PROBED) and not any(
        p.requires_grad for p in comps.model.parameters()
    ):
        raise ConfigError(
            "[instruments] quantities: sharpness, the Hessian trace, gradient tests, "
            "histograms and alpha need trainable parameters, and the model has none"
        )
    if "preconditioned_sharpness" in quantities and cfg.optimizer.name not in ("adam", "adamw"):
        raise ConfigError(
            "[instruments] quantities: 'preconditioned_sharpness' needs [optimizer] name = "
            f"'adam' or 'adamw' (Adam's preconditioner), got {cfg.optimizer.name!r}"
        )
    # The probes evaluate the trainer's own batch loss (the callback's default).
    kwargs: dict[str, Any] = {
        "quantities": quantities,
        "every": inst.every,
        "sharpness_every": inst.sharpness_every,
        "grad_tests_every": inst.grad_tests_every,
        "trace_samples": inst.trace_samples,
        "hist_bins": inst.hist_bins,
        "hist_bins_2d": tuple(int(b) for b in inst.hist_bins_2d),
        "hist_range": inst.hist_range or None,
        "hist_per_layer": inst.hist_per_layer,
        "seed": cfg.run.seed,
    }
    if "noise_scale" in quantities:
        kwargs["noise_source"] = resolve_noise_source(cfg, world)
    if inst.probe_batch_size:
        kwargs["probe_batch"] = probe_batch(comps, inst.probe_batch_size)
    try:
        return InstrumentsCallback(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[instruments]: {e}") from None


# --- the history on disk ---------------------------------------------------------------
def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _hvp_counts(callback: Any, attr: str = "hvp_counts") -> list[int]:
    inst = getattr(callback, "instruments", None)
    return [int(c) for c in (getattr(inst, attr, None) or [])]


def write_history(path: Path, callback: Any) -> Path:
    """Write the callback's history (and HVPs per sharpness measurement) as JSON, atomically.

    ``{"history": {key: [[step, value], ...]}, "hvp_counts": [...],
    "preconditioned_hvp_counts": [...], "histograms": {key: [{"step", "counts", "edges"},
    ...]}}``; NaN and inf become null (JSON has neither).
    """
    history = {
        key: [[int(s), _finite(float(v))] for s, v in series]
        for key, series in callback.history.items()
    }
    data = {
        "history": history,
        "hvp_counts": _hvp_counts(callback),
        "preconditioned_hvp_counts": _hvp_counts(callback, "preconditioned_hvp_counts"),
        "histograms": {
            key: [
                {
                    "step": int(s),
                    "counts": h.counts.tolist(),
                    "edges": [[_finite(float(x)) for x in e] for e in h.edges],
                }
                for s, h in series
            ]
            for key, series in getattr(callback, "histograms", {}).items()
        },
    }
    return atomic_write(path, json.dumps(data))


def load_history(path: Path) -> tuple[History, list[int]]:
    """``(history, hvp_counts)`` read back from :func:`write_history`'s file (null -> NaN)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    history = {
        key: [(int(s), math.nan if v is None else float(v)) for s, v in series]
        for key, series in data["history"].items()
    }
    return history, [int(c) for c in data.get("hvp_counts", [])]


# --- numbers and figures for the report -------------------------------------------------
def _last(history: History, key: str) -> float | None:
    series = history.get(key)
    return series[-1][1] if series else None


def dynamics_numbers(history: History, hvp_counts: list[int]) -> dict[str, Any]:
    """The instruments' numbers for the summary table (latest values)."""
    out: dict[str, Any] = {}
    for label, key in (
        ("final sharpness", "sharpness"),
        ("final sharpness threshold", "sharpness_threshold"),
        ("final preconditioned sharpness", "preconditioned_sharpness"),
        ("final preconditioned threshold", "preconditioned_threshold"),
        ("final gradient noise scale", "noise_scale"),
        ("final critical batch size", "critical_batch_size"),
        ("final Hessian trace", "hessian_trace"),
        ("final Hessian trace standard error", "hessian_trace/stderr"),
        ("final distance from init", "distance"),
        ("final norm test", "grad_tests/norm_test"),
        ("final inner-product test", "grad_tests/inner_product_test"),
        ("final orthogonality test", "grad_tests/orthogonality_test"),
        ("final gradient signal-to-noise ratio", "grad_tests/gsnr"),
        ("final early-stopping criterion", "grad_tests/early_stopping"),
        ("final CABS batch size", "grad_tests/cabs"),
        ("final TIC", "tic"),
        ("final alpha", "alpha"),
    ):
        value = _last(history, key)
        if value is not None:
            out[label] = value
    if hvp_counts:
        out["HVPs per sharpness measurement (median)"] = statistics.median(hvp_counts)
    return out


def _sharpness_caption(cfg: Config, history: History, every: int) -> str:
    text = (
        f"The top Hessian eigenvalue of the training loss on a fixed probe batch, every "
        f"{every} optimizer steps (warm-started Lanczos), against the stability threshold "
        "of the update: 2/lr for gradient descent, (2 + 2 momentum)/lr with heavy-ball "
        "momentum. Under (S)GD sharpness rises while training (progressive sharpening) "
        "until it reaches the threshold and then hovers there (the edge of stability, "
        "Cohen et al. 2021): far above it for long, the step is too large for the "
        "curvature; far below, there is room for a larger rate."
    )
    if "preconditioned_sharpness" in history:
        b1 = cfg.optimizer.betas[0]
        text += (
            " For Adam look at the preconditioned sharpness (top eigenvalue of P^-1 H with "
            "Adam's preconditioner) against its threshold (2 + 2 beta1) / ((1 - beta1) lr) = "
            f"{(2 + 2 * b1) / (1 - b1):.3g}/lr at beta1 = {b1:g} (Cohen et al. 2022)."
        )
    return text


def _noise_caption(cfg: Config, history: History) -> str:
    crit = _last(history, "critical_batch_size")
    sizes = [v for _, v in history.get("batch_size", []) if math.isfinite(v)]
    used = statistics.mode(sizes) if sizes else None  # the last batch of an epoch may be short
    return (
        "The simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. "
        "2018, unbiased estimators from gradients at two batch sizes, smoothed) with the "
        "critical batch size it implies, and the batch size this run used"
        + (f" ({used:g})" if used is not None and math.isfinite(used) else "")
        + ". Below the critical batch size a larger batch saves steps almost one for one; "
        "well above it, extra samples buy little. It usually grows as the loss falls; the "
        "two-batch estimate is noisy, so read the trend, and where it comes out zero or "
        "negative (mostly a |G|^2 estimate at or below zero: the gradient is tiny against "
        "the noise) there is no estimate: those steps are marked along the top"
        + (f"; latest estimate {crit:.3g}." if crit is not None and math.isfinite(crit) else ".")
    )


# The report's title and file for each figure of optiscope.instruments.plots, in order.
_FIGURES = {
    "dashboard": ("Training dynamics at a glance", "instruments_dashboard.png"),
    "sharpness": ("Sharpness against the stability threshold", "instruments_sharpness.png"),
    "hessian_trace": ("Hessian trace of the probe batch", "instruments_trace.png"),
    "noise_scale": ("Gradient noise scale and critical batch size", "instruments_noise.png"),
    "update_ratios": ("Per-layer update-to-weight ratio", "instruments_updates.png"),
    "distance": ("Distance from the initial weights", "instruments_distance.png"),
    "grad_tests": ("Gradient tests and signal-to-noise ratio", "instruments_grad_tests.png"),
    "grad_hist": ("Per-sample gradient histograms", "instruments_grad_hist.png"),
    "grad_hist_layers": (
        "Per-sample gradient histograms of each parameter tensor",
        "instruments_grad_hist_layers.png",
    ),
    "alpha": ("Effective step size alpha", "instruments_alpha.png"),
}


def _captions(cfg: Config, history: History) -> dict[str, str]:
    inst = cfg.instruments
    return {
        "dashboard": "Every quantity the instruments recorded, one panel each (the figures "
        "below, smaller), in the manner of Cockpit's dashboard: read a panel's full figure "
        "and caption for what to look for.",
        "sharpness": _sharpness_caption(cfg, history, inst.sharpness_every),
        "hessian_trace": "tr(H), the sum of all the probe Hessian's eigenvalues, every "
        f"{inst.sharpness_every} optimizer steps: Hutch++ with the sharpness run's Lanczos "
        f"basis as its sketch and {inst.trace_samples} Rademacher probes for the rest, with a "
        "band of two standard errors. It tracks the total curvature; a trace that grows "
        "much faster than the sharpness means the curvature is spreading over many "
        "directions, one that stays a small multiple of it means a few directions dominate.",
        "noise_scale": _noise_caption(cfg, history),
        "update_ratios": "log10 of |update| / |weights| for each parameter tensor (rows) over "
        f"optimizer steps (columns, every {inst.every}). Around 1e-3 is the usual healthy "
        "range; a row far above it moves too fast (lower its rate or clip it), a row far "
        "below barely learns (frozen, dead or badly scaled).",
        "distance": "|w_t - w_0| over optimizer steps. It grows fast early and flattens as the "
        "learning rate decays; a sudden jump marks a loss spike, and a distance that keeps "
        "growing linearly late in training means the weights are still drifting (weight "
        "norm growth, or a rate too large to settle).",
        "grad_tests": "Cockpit's norm, inner-product and orthogonality tests on the probe "
        f"batch's per-sample gradients, every {inst.grad_tests_every} optimizer steps: each "
        "is the smallest tolerance the mean gradient passes at this batch size (the spread "
        "of the per-sample gradients relative to the mean's norm). Below 1 the gradient "
        "direction is reliable; far above 1 the step is mostly noise, and adaptive sampling "
        "(Byrd et al. 2012, Bollapragada et al. 2018) would grow the batch. Right: the mean "
        "gradient signal-to-noise ratio, which falls as training reaches the noise floor.",
        "grad_hist": "Every element of every per-sample gradient of the probe batch, every "
        f"{inst.grad_tests_every} optimizer steps (Cockpit's gradient histograms). Left: its "
        "density on a log scale, one line per measurement (the last bold); right: the last "
        "measurement's gradient elements against their parameters' values. A peak that "
        "narrows while the tails stay wide means a few samples or weights carry large "
        "gradients; gradients that spread with the parameter value point at large weights "
        "driving the loss.",
        "grad_hist_layers": "The last measurement's per-sample gradient elements, split by "
        "parameter tensor (on the same bins as the total). A tensor whose elements reach far "
        "into the tails or alone fill the edge bins is where the large per-sample gradients "
        "come from: a layer to clip, rescale or give its own learning rate.",
        "alpha": "Where each step landed on the probe batch's loss along it, every "
        f"{inst.grad_tests_every} optimizer steps (Cockpit's alpha, Schneider et al. 2021): "
        "a quadratic fitted to the loss and slope at both ends of the step, each weighted by "
        "its spread over the samples. -1 is no progress, 0 the minimum along the step, 1 the "
        "other side at the same loss. Steps that keep landing below 0 stop short (a larger "
        "learning rate would help); steps far above 1 overshoot, as at the edge of "
        "stability; Cockpit finds well-tuned SGD slightly above 0.",
    }


def dynamics_figures(
    cfg: Config, history: History, fig_dir: Path, histograms: dict[str, list] | None = None
) -> list[FigureSpec]:
    """The instruments' figures for the report (only of the quantities that were measured).

    Drawn by :mod:`optiscope.instruments.plots` (whose :func:`~optiscope.instruments.plots.
    figures` decides what was measured); an empty history gives no figures.
    """
    if not any(history.values()) and not (histograms and any(histograms.values())):
        return []
    from optiscope.instruments import plots

    drawn = {
        "dashboard": plots.dashboard(history, histograms),
        **plots.figures(history, histograms),
    }
    captions = _captions(cfg, history)
    return [
        FigureSpec(_FIGURES[key][0], captions[key], save_figure(fig, fig_dir / _FIGURES[key][1]))
        for key, fig in drawn.items()
    ]


def instruments_outputs(
    cfg: Config, callback: Any, run_dir: Path, fig_dir: Path
) -> tuple[dict[str, Any], list[FigureSpec]]:
    """After training (rank 0): write ``instruments.json``; the summary numbers and figures."""
    write_history(run_dir / "instruments.json", callback)
    history, histograms = callback.history, callback.histograms
    figures = dynamics_figures(cfg, history, fig_dir, histograms)
    return dynamics_numbers(history, _hvp_counts(callback)), figures
