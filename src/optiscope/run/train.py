"""Stages of a run that draw one figure each: schedules, LR range test, training curves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optiscope.app import summary as S
from optiscope.app.analysis import FigureSpec
from optiscope.app.build import Components, schedule_lengths
from optiscope.app.config import RunConfig
from optiscope.app.figures import save_figure, training_curves_figure

__all__ = ["schedule_figures", "lr_find_stage", "run_lr_find", "EpochPrinter", "curves_figure"]

Echo = Callable[[str], None]


def schedule_figures(cfg: RunConfig, comps: Components, fig_dir: Path) -> list[FigureSpec]:
    """The guide's schedule comparison and the schedule this run uses (warmup end marked)."""
    from optiscope.schedules import compare_schedules

    out = [
        FigureSpec(
            "The guide's learning-rate schedules",
            "Step decay, exponential decay, cosine annealing and cosine with warm restarts "
            "over 100 epochs (log scale), as in the guide's Part 1; compare how fast each "
            "leaves the peak and where restarts jump back up.",
            save_figure(compare_schedules(epochs=100), fig_dir / "schedule_comparison.png"),
        )
    ]
    total, warmup = schedule_lengths(cfg, comps.steps_per_epoch)
    unit = "epoch" if cfg.schedule.interval == "epoch" else "optimizer step"
    fig = comps.schedule.plot(total, title=f"Schedule used: {comps.schedule!r}"[:110], xlabel=unit)
    out.append(
        FigureSpec(
            "The schedule used in this run",
            f"The learning rate at every {unit} of this run ({total} in all), with its "
            + (f"warmup end at {unit} {warmup} marked; " if warmup else "notable points marked; ")
            + "the training-curves figure shows the rate the optimizer actually applied.",
            save_figure(fig, fig_dir / "schedule_used.png"),
        )
    )
    return out


def lr_find_stage(
    cfg: RunConfig, comps: Components, path: Path, run_dir: Path, *, reuse: bool, echo: Echo
) -> tuple[FigureSpec, dict[str, Any]]:
    info_path = run_dir / "lr_find.json"
    if reuse and path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
    else:
        t0 = time.perf_counter()
        result, fig = run_lr_find(cfg, comps)
        save_figure(fig, path)
        info = {
            "suggestion": result.suggestion,
            "suggestion_min": result.suggestion_min,
            "diverged": result.diverged,
            "iterations": len(result.lrs),
        }
        S.write_json(info_path, info)
        sug = info["suggestion"]
        echo(
            f"  LR range test: {len(result.lrs)} steps, suggested lr "
            + (f"{sug:.3g}" if sug is not None else "none")
            + f" ({time.perf_counter() - t0:.1f}s)"
        )
    sug = info.get("suggestion")
    caption = (
        "Loss (smoothed) while the learning rate grows exponentially over "
        f"{info['iterations']} mini-batches (Smith 2015), model and optimizer restored "
        "afterwards; pick a rate on the steepest descent, well before the loss blows up"
        + (f" (suggested: {sug:.3g}; this run's peak: {cfg.optimizer.lr:.3g})." if sug else ".")
    )
    return FigureSpec("LR range test", caption, path), info


def run_lr_find(cfg: RunConfig, comps: Components) -> tuple[Any, Any]:
    """The LR range test for ``comps`` (restores everything) and its figure."""
    from optiscope.training import lr_find

    lf = cfg.lr_find
    result = lr_find(
        comps.model, comps.optimizer, comps.loss_fn, comps.train_loader,
        start_lr=lf.start_lr, end_lr=lf.end_lr, num_iter=lf.num_iter, mode=lf.mode,
        device=comps.device,
    )  # fmt: skip
    return result, result.plot()


class EpochPrinter:
    """One line per epoch (the trainer's own printing is the guide's verbose format)."""

    def __init__(self, echo: Echo, epochs: int) -> None:
        self.echo, self.epochs = echo, epochs

    def on_epoch_end(self, trainer: Any) -> None:
        acc = trainer.val_accuracies[-1] if trainer.val_accuracies else None
        val = trainer.val_losses[-1] if trainer.val_losses else float("nan")
        self.echo(
            f"  epoch {trainer.epoch:>3}/{self.epochs}  train loss {trainer.train_losses[-1]:.4f}"
            f"  val loss {val:.4f}" + (f"  val acc {acc:.4f}" if acc is not None else "")
            + f"  lr {trainer.optimizer.param_groups[0]['lr']:.3g}"
        )  # fmt: skip


def curves_figure(cfg: RunConfig, comps: Components, trainer: Any, fig_dir: Path) -> FigureSpec:
    threshold = getattr(comps.clipper, "max_norm", None)
    fig = training_curves_figure(
        trainer.history, trainer.train_losses, trainer.val_losses, trainer.val_accuracies,
        clip_threshold=threshold if isinstance(threshold, (int, float)) else None,
    )  # fmt: skip
    n_clip = sum(bool(r.clipped) for r in trainer.history)
    return FigureSpec(
        "Training curves",
        "Per-step and per-epoch training loss with validation loss, validation accuracy, "
        "the learning rate the optimizer applied, and the pre-clip gradient norm with "
        f"clipped steps in red ({n_clip} of {len(trainer.history)}); frequent clipping late "
        "in training means the threshold is too low for the loss scale.",
        save_figure(fig, fig_dir / "training_curves.png"),
    )
