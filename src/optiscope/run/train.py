"""Train: the schedule figures and LR range test before training, the training, its curves.

The stage after building. :func:`train` runs ``AdvancedTrainer`` as the config says, with
the trajectory recorder and a one-line-per-epoch printer as callbacks; the figures around
it each come with the caption the report shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optiscope._internal.atomic import atomic_write
from optiscope.run.build import Components, schedule_lengths
from optiscope.run.config import Config, ConfigError
from optiscope.run.figures import FigureSpec, save_figure, training_curves_figure
from optiscope.run.trajectory import TrajectoryRecorder

__all__ = [
    "schedule_figures",
    "lr_find_stage",
    "run_lr_find",
    "train",
    "EpochPrinter",
    "curves_figure",
]

Echo = Callable[[str], None]


def schedule_figures(cfg: Config, comps: Components, fig_dir: Path) -> list[FigureSpec]:
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
    cfg: Config, comps: Components, path: Path, run_dir: Path, *, reuse: bool, echo: Echo
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
        atomic_write(info_path, json.dumps(info))
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


def run_lr_find(cfg: Config, comps: Components) -> tuple[Any, Any]:
    """The LR range test for ``comps`` (restores everything) and its figure."""
    from optiscope.training import lr_find

    lf = cfg.lr_find
    result = lr_find(
        comps.model, comps.optimizer, comps.loss_fn, comps.train_loader,
        start_lr=lf.start_lr, end_lr=lf.end_lr, num_iter=lf.num_iter, mode=lf.mode,
        device=comps.device,
    )  # fmt: skip
    return result, result.plot()


def train(
    cfg: Config, comps: Components, run_dir: Path, resume: bool, echo: Echo, main: bool = True,
    instruments: Any = None,
) -> tuple[Any, float]:  # fmt: skip
    """Train ``comps`` as ``[train]`` says; returns the trainer and the training seconds.

    Only the main process (rank 0 under torchrun) records the trajectory and prints.
    ``instruments`` (the ``[instruments]`` callback, on every rank) comes first among the
    callbacks, so its checkpointed state has the same key on every rank.
    """
    from optiscope.schedules import ScheduleLR
    from optiscope.training import AdvancedTrainer, CheckpointError

    t = cfg.train
    recorder = TrajectoryRecorder(run_dir / "trajectory", every=t.trajectory_every_epochs)
    callbacks = [recorder, EpochPrinter(echo, t.epochs)] if main else []
    if instruments is not None:
        callbacks.insert(0, instruments)
    try:
        trainer = AdvancedTrainer(
            comps.model, comps.optimizer, comps.loss_fn, comps.device,
            precision=t.precision, grad_accum_steps=t.grad_accum_steps, nonfinite=t.nonfinite,
            log_interval=t.log_interval, seed=cfg.run.seed, run_dir=run_dir,
            progress_bar=t.progress, verbose=False,
            callbacks=callbacks,
        )  # fmt: skip
    except (ValueError, TypeError) as e:
        # The trainer checks its arguments at construction (e.g. 16-mixed without CUDA).
        raise ConfigError(f"[train]: {e}") from None
    scheduler = ScheduleLR(comps.optimizer, comps.schedule)
    echo(f"training {t.epochs} epochs x {comps.steps_per_epoch} steps")
    t0 = time.perf_counter()
    try:
        trainer.train(
            comps.train_loader, comps.val_loader, t.epochs, scheduler=scheduler,
            max_grad_norm=None, clipper=comps.clipper, scheduler_interval=cfg.schedule.interval,
            checkpoint_dir=run_dir / "checkpoints",
            checkpoint_every_steps=t.checkpoint_every_steps or None, resume=resume,
            early_stopping_patience=t.early_stopping_patience or None, monitor=t.monitor,
        )  # fmt: skip
    except CheckpointError as e:
        # A corrupt checkpoint, or one of another model: the run directory is bad input.
        raise ConfigError(f"cannot resume: {e}") from None
    return trainer, time.perf_counter() - t0


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


def curves_figure(comps: Components, trainer: Any, fig_dir: Path) -> FigureSpec:
    """The training curves of a finished run, with the clip threshold when there is one."""
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
