"""The run pipeline: a config in, a run directory with metrics, checkpoints, figures and
``report.html`` out. ``optiscope train`` and ``optiscope demo`` are this code with
different configs; ``lr-find`` and ``landscape`` reuse its pieces.

Run directory layout (``[run] out_dir / name``)::

    config.toml          the full config used (defaults filled in)
    metrics.csv/.jsonl   per-step and per-epoch metrics (written by the trainer)
    checkpoints/         last.pt (every epoch) and best.pt (best [train] monitor value)
    trajectory/          weights after each epoch, for the PCA trajectory plane
    figures/             every figure as PNG (+ the interactive surface as plotly JSON)
    summary.json         the numbers of the summary table
    report.json          what the report shows; report.html is rendered from it
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optiscope.app import summary as S
from optiscope.app.analysis import (
    Analysis,
    FigureSpec,
    curvature_figures,
    evaluation_data,
    landscape_figures,
)
from optiscope.app.build import Components, build_components
from optiscope.app.config import ConfigError, RunConfig, config_to_toml
from optiscope.app.stages import EpochPrinter, curves_figure, lr_find_stage, schedule_figures
from optiscope.app.trajectory import TrajectoryRecorder, load_trajectory

__all__ = ["RunResult", "train_run", "analyse", "with_out_dir", "seed_everything", "apply_threads"]

Echo = Callable[[str], None]


def print_line(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class RunResult:
    """What :func:`train_run` produced."""

    run_dir: Path
    report_path: Path | None
    summary: dict[str, Any] = field(default_factory=dict)


def with_out_dir(cfg: RunConfig, out_dir: str | os.PathLike | None) -> RunConfig:
    """``cfg`` with ``[run] out_dir`` replaced (unchanged when ``out_dir`` is None)."""
    if out_dir is None:
        return cfg
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=str(out_dir)))


def apply_threads(threads: int) -> None:
    """Set torch's intra-op threads (0 leaves torch's default).

    Small models on a busy machine run far slower with more threads than free cores
    (OpenMP workers spin waiting for each other), which is why the demo uses one.
    """
    if threads > 0:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a config reproduces its run."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - user code draws from the legacy global state
    torch.manual_seed(seed)


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    ckpt = run_dir / "checkpoints" / "last.pt"
    if resume and not ckpt.is_file():
        raise ConfigError(f"nothing to resume: {ckpt} does not exist (run without --resume)")
    if not resume and not overwrite and ckpt.exists():
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to "
            "start over"
        )


def _reset_run_dir(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and not resume:
        # Only what a run writes is removed, never anything else the user put there.
        for name in ("checkpoints", "trajectory", "figures", "tensorboard"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in ("metrics.csv", "metrics.jsonl", "summary.json", "report.json",
                     "report.html", "lr_find.json", "config.toml"):  # fmt: skip
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def train_run(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, echo: Echo = print_line
) -> RunResult:
    """Train as ``cfg`` says and write the run directory and its report.

    Args:
        cfg: The validated config.
        resume: Continue from ``checkpoints/last.pt`` (an error when there is none).
        overwrite: Start over even if the run directory already holds a run.
        echo: Where progress lines go.

    Returns:
        The run directory, the report's path and the summary numbers.

    Raises:
        ConfigError: A bad config value, an existing run without ``overwrite``/``resume``,
            or nothing to resume.

    Example:
        >>> from optiscope.app.demo import demo_config
        >>> cfg = demo_config(out_dir=__import__("tempfile").mkdtemp(), epochs=3, quick=True)
        >>> train_run(cfg, echo=lambda s: None).report_path.name  # doctest: +SKIP
        'report.html'
    """
    t_start = time.perf_counter()
    rank, world, joined = _join_process_group(cfg)
    try:
        return _train_run(cfg, resume, overwrite, echo if rank == 0 else _quiet, rank, world,
                          t_start)  # fmt: skip
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train_run(
    cfg: RunConfig, resume: bool, overwrite: bool, echo: Echo, rank: int, world: int,
    t_start: float,
) -> RunResult:  # fmt: skip
    main = rank == 0
    run_dir = cfg.run_dir
    _check_run_dir(run_dir, resume, overwrite)
    apply_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    # Everything is built (and every config error raised) before the directory is touched.
    comps = build_components(cfg)
    if main:
        _reset_run_dir(run_dir, resume)
        (run_dir / "config.toml").write_text(config_to_toml(cfg), encoding="utf-8")
    _barrier(world)
    # Under torchrun every rank computes its share of the landscapes; only rank 0 keeps
    # files, so the others draw into a scratch directory that is removed at the end.
    fig_dir = run_dir / "figures" if main else Path(tempfile.mkdtemp(prefix="optiscope-"))
    fig_dir.mkdir(exist_ok=True)
    echo(f"run directory: {run_dir}" + (f" ({world} processes)" if world > 1 else ""))
    echo(f"  {S.describe_model(cfg, comps)}; {S.describe_optimizer(cfg)}")
    figures: list[FigureSpec] = []
    lr_info: dict[str, Any] = {}
    if main:
        figures = schedule_figures(cfg, comps, fig_dir)
        if cfg.lr_find.enabled:
            found = lr_find_stage(
                cfg, comps, fig_dir / "lr_find.png", run_dir, reuse=resume, echo=echo
            )
            lr_info = found[1]
            figures.append(found[0])
    _barrier(world)
    trainer, t_train = _train(cfg, comps, run_dir, resume, echo, main)
    _barrier(world)  # the trajectory snapshots rank 0 wrote are complete from here on
    try:
        if main:
            figures.append(curves_figure(cfg, comps, trainer, fig_dir))
        analysis = analyse(cfg, comps, run_dir, echo, fig_dir=fig_dir, curvature=main)
    finally:
        if not main:
            shutil.rmtree(fig_dir, ignore_errors=True)
    figures += analysis.figures
    numbers = S.run_numbers(cfg, comps, trainer, t_train, lr_info, analysis)
    numbers["processes"] = world
    numbers["total seconds"] = time.perf_counter() - t_start
    report_path = None
    if main:
        S.write_json(run_dir / "summary.json", numbers)
        if cfg.report.enabled:
            report_path = S.write_run_report(cfg, comps, numbers, figures, analysis.notes, run_dir)
    _barrier(world)
    acc = numbers.get("final val accuracy")
    echo(
        f"done in {numbers['total seconds']:.1f}s: final val loss "
        f"{numbers.get('final val loss', float('nan')):.4f}"
        + (f", val accuracy {acc:.4f}" if acc is not None else "")
    )
    return RunResult(run_dir, report_path, numbers)


def _quiet(msg: str) -> None:
    pass


def _join_process_group(cfg: RunConfig) -> tuple[int, int, bool]:
    """``(rank, world size, joined here)``; joins the group torchrun describes.

    ``torchrun --nproc_per_node N -m optiscope train --config run.toml`` sets
    ``WORLD_SIZE``; the trainer then runs under DistributedDataParallel.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1, False
    joined = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        use_cuda = cfg.run.device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        joined = True
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), joined
    return 0, 1, joined


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _train(
    cfg: RunConfig, comps: Components, run_dir: Path, resume: bool, echo: Echo, main: bool = True
) -> tuple[Any, float]:
    from optiscope.schedules import ScheduleLR
    from optiscope.training import AdvancedTrainer

    t = cfg.train
    recorder = TrajectoryRecorder(run_dir / "trajectory", every=t.trajectory_every_epochs)
    printer = EpochPrinter(echo, t.epochs)
    try:
        trainer = AdvancedTrainer(
            comps.model, comps.optimizer, comps.loss_fn, comps.device,
            precision=t.precision, grad_accum_steps=t.grad_accum_steps, nonfinite=t.nonfinite,
            log_interval=t.log_interval, seed=cfg.run.seed, run_dir=run_dir,
            progress_bar=t.progress, verbose=False,
            callbacks=[recorder, printer] if main else [],
        )  # fmt: skip
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[train]: {e}") from None
    scheduler = ScheduleLR(comps.optimizer, comps.schedule)
    echo(f"training {t.epochs} epochs x {comps.steps_per_epoch} steps")
    t0 = time.perf_counter()
    trainer.train(
        comps.train_loader, comps.val_loader, t.epochs, scheduler=scheduler, max_grad_norm=None,
        clipper=comps.clipper, scheduler_interval=cfg.schedule.interval,
        checkpoint_dir=run_dir / "checkpoints",
        checkpoint_every_steps=t.checkpoint_every_steps or None, resume=resume,
        early_stopping_patience=t.early_stopping_patience or None, monitor=t.monitor,
    )  # fmt: skip
    return trainer, time.perf_counter() - t0


def analyse(
    cfg: RunConfig,
    comps: Components,
    run_dir: Path,
    echo: Echo,
    *,
    fig_dir: Path | None = None,
    curvature: bool = True,
) -> Analysis:
    """Landscape and curvature figures around the model's current weights.

    Args:
        cfg: The run config (``[landscape]``, ``[curvature]``).
        comps: The built run (its model holds the weights to look around).
        run_dir: The run directory (trajectory snapshots are read from it).
        echo: Where progress lines go.
        fig_dir: Where figures go (default ``run_dir/figures``).
        curvature: Compute curvature (only rank 0 does under torchrun).

    Returns:
        The figures, numbers and notes.
    """
    out = Analysis()
    if not (cfg.landscape.enabled or cfg.curvature.enabled):
        return out
    fig_dir = run_dir / "figures" if fig_dir is None else fig_dir
    loader = comps.train_loader if cfg.landscape.split == "train" else comps.val_loader
    data, targets = evaluation_data(loader, cfg.landscape.max_batches)
    if isinstance(data, torch.Tensor):
        # Landscape and curvature evaluate where the model lives.
        data, targets = data.to(comps.device), targets.to(comps.device)
    if cfg.landscape.enabled:
        echo("loss landscape:")
        _guarded(out, "loss landscape", echo, lambda: landscape_figures(
            comps.model, comps.loss_fn, data, targets, cfg.landscape, fig_dir,
            trajectory=load_trajectory(run_dir / "trajectory"), echo=echo,
        ))  # fmt: skip
    if cfg.curvature.enabled and curvature:
        echo("curvature:")
        _guarded(out, "curvature", echo, lambda: curvature_figures(
            comps.model, comps.loss_fn, data, targets, cfg.curvature, fig_dir,
            seed=cfg.run.seed, echo=echo,
        ))  # fmt: skip
    return out


def _guarded(out: Analysis, what: str, echo: Echo, compute: Callable[[], Analysis]) -> None:
    # The model is trained and checkpointed by now: a failing analysis becomes a note in
    # the report instead of costing the run its report (the model is restored either way).
    try:
        _merge(out, compute())
    except (ValueError, TypeError, RuntimeError, FloatingPointError, ImportError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        note = f"{what} skipped: {type(e).__name__}: {first}"
        echo(f"  {note}")
        out.notes.append(note)


def _merge(into: Analysis, part: Analysis) -> None:
    into.figures += part.figures
    into.numbers.update(part.numbers)
    into.notes += part.notes
    into.seconds += part.seconds
