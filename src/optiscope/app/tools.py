"""``optiscope lr-find`` and ``optiscope landscape``: pieces of the pipeline on their own."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optiscope.app import summary as S
from optiscope.app.build import build_components
from optiscope.app.config import ConfigError, RunConfig
from optiscope.app.figures import save_figure
from optiscope.app.pipeline import Echo, analyse, apply_threads, print_line, seed_everything
from optiscope.app.stages import run_lr_find

__all__ = ["LRFindRun", "LandscapeRun", "lr_find_run", "landscape_run", "load_weights"]


@dataclass
class LRFindRun:
    """What :func:`lr_find_run` produced."""

    figure: Path
    suggestion: float
    result: Any


@dataclass
class LandscapeRun:
    """What :func:`landscape_run` produced."""

    figures: list[Path]
    report_path: Path | None


def lr_find_run(cfg: RunConfig, *, out: str | os.PathLike | None = None) -> LRFindRun:
    """``optiscope lr-find``: the LR range test for the config's model, data and optimizer.

    Returns:
        The figure's path, the suggested learning rate and the full result.

    Raises:
        ConfigError: A bad config value, or the test found no descent to suggest from.
    """
    apply_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    comps = build_components(cfg)
    result, fig = run_lr_find(cfg, comps)
    path = Path(out) if out is not None else cfg.run_dir / "figures" / "lr_find.png"
    save_figure(fig, path)
    if result.suggestion is None:
        raise ConfigError(
            f"the LR range test found no descending stretch (figure: {path}); widen "
            "[lr_find] start_lr/end_lr or raise num_iter"
        )
    return LRFindRun(path, float(result.suggestion), result)


def landscape_run(
    cfg: RunConfig, checkpoint: str | os.PathLike, *, out: str | os.PathLike | None = None,
    echo: Echo = print_line,
) -> LandscapeRun:  # fmt: skip
    """``optiscope landscape``: recompute the landscape (and curvature) figures for weights.

    Args:
        cfg: The config whose model and data the checkpoint belongs to.
        checkpoint: A trainer checkpoint (``last.pt``/``best.pt``) or a plain state_dict.
        out: Directory for the figures (default: the run's ``figures/``; its report is
            rebuilt then, when it has one).
        echo: Where progress lines go.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ConfigError: The checkpoint is corrupt or was saved from another model.
    """
    apply_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    comps = build_components(cfg)
    load_weights(comps.model, checkpoint)
    in_run = out is None
    target = cfg.run_dir if in_run else Path(out)
    target.mkdir(parents=True, exist_ok=True)
    if not in_run:
        (target / "figures").mkdir(exist_ok=True)
    analysis = analyse(cfg, comps, target, echo)
    report_path = None
    if in_run and (target / "report.json").is_file():
        report_path = S.update_report(target, analysis.figures, analysis.numbers)
    return LandscapeRun([f.file for f in analysis.figures], report_path)


def load_weights(model: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load a trainer checkpoint's (or a plain state_dict's) weights into ``model``.

    Raises:
        FileNotFoundError: No such file.
        ConfigError: Not loadable, or saved from a model with other names or shapes.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors all mean "corrupt"
        raise ConfigError(
            f"{path} is not a readable checkpoint: {str(e).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} holds no model weights (expected a checkpoint or state_dict)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = (
            ([f"missing {', '.join(missing[:3])}"] if missing else [])
            + ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else [])
            + ([f"shapes differ: {'; '.join(shapes[:3])} (checkpoint vs model)"] if shapes else [])
        )
        raise ConfigError(
            f"{path} was saved from another model than [model] describes: {'; '.join(parts)}"
        )
    with torch.no_grad():
        model.load_state_dict(state)
