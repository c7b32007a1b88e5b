"""The end-of-training analysis of both integrations: landscape, curvature, HTML report.

A thin layer over the run package: the figures come from
:func:`optiscope.run.analyse.landscape_figures` and
:func:`~optiscope.run.analyse.curvature_figures`, the page from
:func:`optiscope.run.report.write_report_page`, the options are the ``[landscape]`` and
``[curvature]`` tables of a run config (validated by :func:`optiscope.run.parse_config`).
The model is restored bit-for-bit afterwards, RNG states included, so the framework's
trainer continues (or saves) exactly the weights it trained.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiscope._internal.checks import check_positive_int
from optiscope._internal.restore import RNGState, preserved
from optiscope.batch_loss import to_device

__all__ = ["AnalysisOptions", "analysis_options", "write_analysis"]


@dataclass(frozen=True)
class AnalysisOptions:
    """What the end-of-training analysis computes (see :func:`analysis_options`)."""

    landscape: Any
    curvature: Any
    max_batches: int = 4
    name: str = "run"


def analysis_options(analysis: bool | Mapping[str, Any] | None) -> AnalysisOptions | None:
    """Validate the ``analysis`` argument of the integration callbacks.

    Args:
        analysis: False/None (no analysis), True (the run config's defaults), or a dict
            with any of ``landscape`` and ``curvature`` (True, False, or a dict of the
            keys of the config's ``[landscape]``/``[curvature]`` tables), ``max_batches``
            (training batches the analysis evaluates, default 4) and ``name`` (the
            report's title).

    Returns:
        The options, or None when there is no analysis.

    Raises:
        TypeError: ``analysis`` of the wrong kind.
        ValueError: An unknown key or a bad value (a ``ConfigError`` naming the key).

    Example:
        >>> opts = analysis_options({"landscape": {"plane_points": 5}, "curvature": False})
        >>> opts.landscape.plane_points, opts.curvature.enabled, opts.max_batches
        (5, False, 4)
    """
    from optiscope.run import parse_config

    if analysis is None or analysis is False:
        return None
    if analysis is True:
        analysis = {}
    if not isinstance(analysis, Mapping):
        raise TypeError(f"analysis must be a bool or a dict, got {type(analysis).__name__}")
    allowed = {"landscape", "curvature", "max_batches", "name"}
    unknown = sorted(set(analysis) - allowed)
    if unknown:
        raise ValueError(f"analysis: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    tables: dict[str, Any] = {}
    for key in ("landscape", "curvature"):
        value = analysis.get(key, True)
        if isinstance(value, bool):
            value = {"enabled": value}
        elif not isinstance(value, Mapping):
            raise TypeError(f"analysis[{key!r}] must be a bool or a dict, got {value!r}")
        tables[key] = dict(value)
    # No weight snapshots are taken inside another trainer's loop.
    tables["landscape"].setdefault("trajectory", False)
    cfg = parse_config(tables, origin="analysis")
    max_batches = check_positive_int("analysis['max_batches']", analysis.get("max_batches", 4))
    name = analysis.get("name", "run")
    if not isinstance(name, str) or not name:
        raise TypeError(f"analysis['name'] must be a non-empty str, got {name!r}")
    return AnalysisOptions(cfg.landscape, cfg.curvature, max_batches, name)


def first_batches(loader: Iterable, n: int, device: torch.device) -> list[Any]:
    """The first ``n`` batches of ``loader``, moved to ``device``; RNG states untouched.

    Starting a DataLoader's iterator draws from the global torch RNG (its base seed, a
    shuffle), so the states are restored afterwards: reading the batches must not change
    the training that follows, or the weights' future.
    """
    out = []
    rng = RNGState.capture()
    try:
        for batch in loader:
            out.append(to_device(batch, device))
            if len(out) >= n:
                break
    finally:
        rng.restore()
    if not out:
        raise ValueError("the analysis has no data: the training dataloader yielded no batches")
    return out


def write_analysis(
    model: nn.Module,
    loss_fn: Any,
    batches: list[Any],
    options: AnalysisOptions,
    run_dir: Path,
    summary: Mapping[str, Any],
    extra_figures: Iterable[Any] = (),
) -> Path:
    """Landscape and curvature figures, ``summary.json`` and ``report.html`` in ``run_dir``.

    Args:
        model: The trained model (restored bit-for-bit afterwards, RNG states too).
        loss_fn: How a batch becomes a loss (see :mod:`optiscope.batch_loss`).
        batches: The batches to evaluate (already on the model's device).
        options: From :func:`analysis_options`.
        run_dir: Where the figures, ``summary.json`` and the report go.
        summary: Rows to show first in the summary table (label -> value).
        extra_figures: More :class:`~optiscope.run.figures.FigureSpec` to show first.

    Returns:
        The path of ``report.html``.
    """
    from optiscope.run import analyse, report

    run_dir = Path(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures, numbers, notes = list(extra_figures), {}, []
    t0 = time.perf_counter()
    quiet = lambda _msg: None  # noqa: E731
    landscape = dataclasses.replace(options.landscape, max_batches=0)
    curvature = dataclasses.replace(options.curvature, max_batches=0)
    with preserved(model, rng=True):
        if landscape.enabled:
            # One process analyses (rank 0), so the grids are not sharded.
            part = analyse.landscape_figures(model, loss_fn, batches, None, landscape, fig_dir,
                                             echo=quiet, distributed=False)  # fmt: skip
            figures += part.figures
            numbers.update(part.numbers)
            notes += part.notes
        if curvature.enabled:
            part = analyse.curvature_figures(model, loss_fn, batches, None, curvature, fig_dir,
                                             seed=landscape.seed, echo=quiet)  # fmt: skip
            figures += part.figures
            numbers.update(part.numbers)
            notes += part.notes
    seconds = time.perf_counter() - t0
    rows = {str(k): report.format_value(v) for k, v in summary.items()}
    rows.update(report.analysis_rows(numbers))
    rows["Analysis"] = f"{len(batches)} training batches, {seconds:.1f}s"
    rows["Software"] = f"torch {torch.__version__}, Python {platform.python_version()}"
    clean = {**{str(k): v for k, v in summary.items()}, **numbers, "analysis seconds": seconds}
    report.write_json(run_dir / "summary.json", json.loads(json.dumps(clean, default=str)))
    return report.write_report_page(options.name, rows, figures, notes, run_dir)
