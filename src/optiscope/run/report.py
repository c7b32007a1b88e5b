"""Report: the numbers and words of a run's summary table, ``summary.json`` and the report.

The last stage. It assembles what the earlier stages produced (the built components,
the trainer, the figures and numbers of the analysis) into ``summary.json``,
``report.json`` and ``report.html`` (rendered by :mod:`optiscope.report`).
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from optiscope._internal.atomic import atomic_write
from optiscope.run.analyse import Analysis
from optiscope.run.build import Components
from optiscope.run.config import Config, config_to_toml
from optiscope.run.figures import FigureSpec

__all__ = [
    "describe_model",
    "describe_optimizer",
    "describe_data",
    "run_numbers",
    "summary_rows",
    "analysis_rows",
    "format_value",
    "write_json",
    "write_run_report",
    "write_report_page",
    "update_report",
]


def _kwargs(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def describe_model(cfg: Config, comps: Components) -> str:
    """``digits_mlp(hidden=[64]) - 4,810 parameters``."""
    m = cfg.model
    name = {"mlp": "digits_mlp", "cnn": "digits_cnn"}.get(m.name, m.name)
    return f"{name}({_kwargs(m.params)}) - {comps.num_params:,} parameters"


def describe_optimizer(cfg: Config) -> str:
    """``AdamW(lr=0.003, weight_decay=0.01, betas=(0.9, 0.999))``."""
    o = cfg.optimizer
    label = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}[o.name]
    parts = [f"lr={o.lr:g}", f"weight_decay={o.weight_decay:g}"]
    if o.name in ("adamw", "adam"):
        parts.append(f"betas=({o.betas[0]:g}, {o.betas[1]:g})")
    else:
        parts.append(f"momentum={o.momentum:g}")
        if o.name == "sgd" and o.nesterov:
            parts.append("nesterov=True")
    return f"{label}({', '.join(parts)}); no weight decay on biases and norm layers"


def _count(loader: Any) -> int | None:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None


def describe_data(cfg: Config, comps: Components) -> str:
    """``digits: 1,437 train / 360 validation samples, batch 64``."""
    n_train, n_val = _count(comps.train_loader), _count(comps.val_loader)
    label = (
        "digits (scikit-learn, 8x8 images, 10 classes)"
        if cfg.data.name == "digits"
        else cfg.data.name
    )
    sizes = (
        f"{n_train:,} train / {n_val:,} validation samples"
        if n_train is not None and n_val is not None
        else f"{len(comps.train_loader)} train batches"
    )
    return f"{label}: {sizes}, batch {cfg.data.batch_size}"


def run_numbers(
    cfg: Config,
    comps: Components,
    trainer: Any,
    train_seconds: float,
    lr_info: dict[str, Any],
    analysis: Analysis,
) -> dict[str, Any]:
    """Every number the summary shows (also written to ``summary.json``)."""
    hist = trainer.history
    accs = [a for a in trainer.val_accuracies if a is not None]
    best_acc = max(accs) if accs else None
    out: dict[str, Any] = {
        "name": cfg.run.name,
        "data": describe_data(cfg, comps),
        "model": describe_model(cfg, comps),
        "parameters": comps.num_params,
        "optimizer": describe_optimizer(cfg),
        "schedule": repr(comps.schedule),
        "schedule interval": cfg.schedule.interval,
        "clipping": "none" if comps.clipper is None else repr(comps.clipper),
        "precision": cfg.train.precision,
        "device": str(comps.device),
        "epochs": trainer.epoch,
        "epochs planned": cfg.train.epochs,
        "optimizer steps": trainer.global_step,
        "skipped steps": trainer.skipped_steps,
        "clipped steps": sum(bool(r.clipped) for r in hist),
        "training seconds": train_seconds,
        "analysis seconds": analysis.seconds,
        "final train loss": trainer.train_losses[-1] if trainer.train_losses else None,
        "final val loss": trainer.val_losses[-1] if trainer.val_losses else None,
        "final val accuracy": trainer.val_accuracies[-1] if trainer.val_accuracies else None,
        "best val accuracy": best_acc,
        "best epoch": trainer.best_epoch,
        "lr finder suggestion": lr_info.get("suggestion"),
        **analysis.numbers,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    return out


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON atomically (NaN/inf become null: JSON has neither)."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()
    }
    return atomic_write(path, json.dumps(clean, indent=2, default=str))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def format_value(value: Any) -> str:
    """A number, flag, list or text as the summary table shows it (None: ``-``).

    Example:
        >>> format_value(0.123456), format_value(1234), format_value(None)
        ('0.1235', '1,234', '-')
    """
    return _fmt(value)


# Summary rows: label -> how to render from the numbers (order is the table's order).
def summary_rows(n: dict[str, Any]) -> dict[str, str]:
    """The summary table's rows from :func:`run_numbers`'s dict."""
    rows = {
        "Data": _fmt(n.get("data")),
        "Model": _fmt(n.get("model")),
        "Optimizer": _fmt(n.get("optimizer")),
        "Schedule": f"{_fmt(n.get('schedule'))} (stepped per {n.get('schedule interval')})",
        "Clipping": _fmt(n.get("clipping")),
        "Precision / device": f"{n.get('precision')} / {n.get('device')}"
        + (f" x {n['processes']} processes (DDP)" if n.get("processes", 1) > 1 else ""),
        "Epochs": f"{n.get('epochs')} of {n.get('epochs planned')} "
        f"({_fmt(n.get('optimizer steps'))} optimizer steps, "
        f"{_fmt(n.get('clipped steps'))} clipped, {_fmt(n.get('skipped steps'))} skipped)",
        "Time": f"training {n.get('training seconds', 0):.1f}s, analysis "
        f"{n.get('analysis seconds', 0):.1f}s, total {n.get('total seconds', 0):.1f}s",
        "Final train loss": _fmt(n.get("final train loss")),
        "Final validation loss": _fmt(n.get("final val loss")),
        "Final validation accuracy": _fmt(n.get("final val accuracy")),
        "Best validation accuracy": f"{_fmt(n.get('best val accuracy'))} "
        f"(best val-loss epoch: {_fmt(n.get('best epoch'))})",
        "LR finder suggestion": _fmt(n.get("lr finder suggestion")),
    }
    rows.update(analysis_rows(n))
    rows.update(_instrument_rows(n))
    rows["Software"] = f"torch {n.get('torch')}, Python {n.get('python')}, {platform.system()}"
    return rows


def analysis_rows(n: dict[str, Any]) -> dict[str, str]:
    """The rows of the landscape and curvature numbers that are present in ``n``.

    Example:
        >>> analysis_rows({"top Hessian eigenvalue": 2.5, "Hessian trace": 10.0})
        {'Top Hessian eigenvalue': '2.5', 'Hessian trace': '10 +- -'}
    """
    rows: dict[str, str] = {}
    optional = {
        "Top Hessian eigenvalue": "top Hessian eigenvalue",
        "Top Hessian eigenvalues": "top Hessian eigenvalues",
        "Line curvature (median, filter-normalised)": "line curvature (quadratic fit at 0)",
        "Trajectory variance on PCA plane": "trajectory variance explained by PC1+PC2",
    }
    for label, key in optional.items():
        if n.get(key) is not None:
            rows[label] = _fmt(n[key])
    if n.get("Hessian trace") is not None:
        rows["Hessian trace"] = (
            f"{_fmt(n['Hessian trace'])} +- {_fmt(n.get('Hessian trace stderr'))}"
        )
    layers = n.get("per-layer Hessian")
    if layers:
        # Which layer is sharpest: its block's top eigenvalue and trace, per parameter.
        rows["Per-layer Hessian (top eigenvalue, trace)"] = "; ".join(
            f"{name}: {_fmt(top)}, {_fmt(trace)} ({_fmt(size)} params)"
            for name, (top, trace, size) in layers.items()
        )
    return rows


def _instrument_rows(n: dict[str, Any]) -> dict[str, str]:
    # What [instruments] recorded, latest values (optiscope.run.dynamics.dynamics_numbers).
    rows: dict[str, str] = {}
    pairs = {
        "Sharpness vs its threshold (final)": (
            "final sharpness",
            "final sharpness threshold",
            " vs ",
        ),
        "Preconditioned sharpness vs its threshold (final)": (
            "final preconditioned sharpness",
            "final preconditioned threshold",
            " vs ",
        ),
        "Hessian trace of the probe batch (final)": (
            "final Hessian trace",
            "final Hessian trace standard error",
            " +- ",
        ),
        "Gradient noise scale, critical batch size (final)": (
            "final gradient noise scale",
            "final critical batch size",
            ", ",
        ),
    }
    for label, (value, other, sep) in pairs.items():
        if n.get(value) is not None:
            rows[label] = f"{_fmt(n[value])}{sep}{_fmt(n.get(other))}"
    for label in ("final distance from init", "HVPs per sharpness measurement (median)",
                  "final TIC"):  # fmt: skip
        if n.get(label) is not None:
            rows[label[0].upper() + label[1:]] = _fmt(n[label])
    tests = ("norm test", "inner-product test", "orthogonality test",
             "gradient signal-to-noise ratio")  # fmt: skip
    if any(n.get(f"final {t}") is not None for t in tests):
        # Cockpit's gradient tests (Bollapragada et al. 2018; Byrd et al. 2012): values
        # above 1 say the batch is too small for the gradient's direction to be trusted.
        rows["Gradient tests (final): norm, inner product, orthogonality, GSNR"] = ", ".join(
            _fmt(n.get(f"final {t}")) for t in tests
        )
    if n.get("final early-stopping criterion") is not None:
        # Mahsereci et al. 2017 (EB criterion): above 0, stop; Balles et al. 2017 (CABS).
        rows["Early-stopping criterion, CABS batch size (final; for plain SGD)"] = (
            f"{_fmt(n['final early-stopping criterion'])}, {_fmt(n.get('final CABS batch size'))}"
        )
    return rows


def _rel(path: Path, run_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def write_run_report(
    cfg: Config,
    comps: Components,
    numbers: dict[str, Any],
    figures: Sequence[FigureSpec],
    notes: Sequence[str],
    run_dir: Path,
) -> Path:
    """Write ``report.json`` and ``report.html`` for a finished run; returns the HTML path."""
    return write_report_page(
        cfg.run.name, summary_rows(numbers), figures, notes, run_dir, config_to_toml(cfg)
    )


def write_report_page(
    name: str,
    summary: dict[str, str],
    figures: Sequence[FigureSpec],
    notes: Sequence[str],
    run_dir: Path,
    config_text: str = "",
) -> Path:
    """Write ``report.json`` and ``report.html`` from summary rows and figures.

    The part of :func:`write_run_report` that needs no config: the Lightning and Hugging
    Face integrations write their reports with it.

    Returns:
        The path of the HTML file.
    """
    from optiscope.report import RunReport, write_report

    report = RunReport(name=name, summary=dict(summary), config_text=config_text,
                       notes=list(notes))  # fmt: skip
    for f in figures:
        report.add_figure(f.title, f.caption, _rel(f.file, run_dir), f.kind)
    return write_report(report, run_dir)


def update_report(run_dir: Path, figures: Sequence[FigureSpec], numbers: dict[str, Any]) -> Path:
    """Replace a run's landscape/curvature figures and numbers, then re-render its report."""
    from optiscope.report import RunReport, write_report

    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        saved = json.loads(summary_path.read_text(encoding="utf-8"))
        saved.update(numbers)
        write_json(summary_path, saved)
    else:
        saved = dict(numbers)
    report = RunReport.load(run_dir)
    report.summary = summary_rows(saved) if summary_path.is_file() else report.summary
    for f in figures:
        report.add_figure(f.title, f.caption, _rel(f.file, run_dir), f.kind)
    return write_report(report, run_dir)
