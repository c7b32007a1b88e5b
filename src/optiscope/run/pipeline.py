"""The run, top to bottom: config -> build -> train -> analyse -> report.

``optiscope train`` and ``optiscope demo`` are :func:`train_run` with different configs;
``optiscope lr-find`` and ``optiscope landscape`` are :func:`lr_find_run` and
:func:`landscape_run`, which run one stage of it on their own.

Run directory layout (``[run] out_dir / name``)::

    config.toml          the full config used (defaults filled in)
    metrics.csv/.jsonl   per-step and per-epoch metrics (written by the trainer)
    checkpoints/         last.pt (every epoch) and best.pt (best [train] monitor value)
    trajectory/          weights after each epoch, for the PCA trajectory plane
    figures/             every figure as PNG (+ the interactive surface as plotly JSON)
    lr_find.json         the LR range test's suggestion (reused by --resume)
    instruments.json     the training-dynamics history, when [instruments] is on
    summary.json         the numbers of the summary table
    report.json          what the report shows; report.html is rendered from it
    report.html          the self-contained report
"""

from __future__ import annotations

import dataclasses
import gc
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

from optiscope._internal.errors import InputFileNotFoundError
from optiscope.run import report
from optiscope.run.analyse import Analysis, curvature_figures, evaluation_data, landscape_figures
from optiscope.run.build import Components, build_components
from optiscope.run.config import Config, ConfigError, config_to_toml
from optiscope.run.dynamics import instruments_callback, instruments_outputs
from optiscope.run.figures import FigureSpec, save_figure
from optiscope.run.train import curves_figure, lr_find_stage, run_lr_find, schedule_figures, train
from optiscope.run.trajectory import load_trajectory
from optiscope.training._state import model_mismatch

__all__ = [
    "RunResult",
    "LRFindRun",
    "LandscapeRun",
    "train_run",
    "lr_find_run",
    "landscape_run",
    "analyse",
    "load_weights",
    "with_out_dir",
    "seed_everything",
    "apply_threads",
]

Echo = Callable[[str], None]


def print_line(msg: str) -> None:
    print(msg, flush=True)


def _quiet(msg: str) -> None:
    pass


@dataclass
class RunResult:
    """What :func:`train_run` produced."""

    run_dir: Path
    report_path: Path | None
    summary: dict[str, Any] = field(default_factory=dict)


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


def train_run(
    cfg: Config, *, resume: bool = False, overwrite: bool = False, echo: Echo = print_line
) -> RunResult:
    """Train as ``cfg`` says and write the run directory and its report.

    Under ``torchrun`` every process runs this; the trainer uses DDP, the landscapes are
    sharded, and only rank 0 writes files and prints.

    Args:
        cfg: The validated config.
        resume: Continue from ``checkpoints/last.pt`` (an error when there is none).
        overwrite: Start over even if the run directory already holds a run.
        echo: Where progress lines go.

    Returns:
        The run directory, the report's path and the summary numbers.

    Raises:
        ConfigError: A bad config value, an existing run without ``overwrite``/``resume``,
            or nothing to resume; raised before anything is written.

    Example:
        >>> from optiscope.run.demo import demo_config
        >>> cfg = demo_config(out_dir=__import__("tempfile").mkdtemp(), epochs=3, quick=True)
        >>> train_run(cfg, echo=lambda s: None).report_path.name  # doctest: +SKIP
        'report.html'
    """
    t_start = time.perf_counter()
    rank, world, joined = _join_process_group(cfg)
    try:
        main = rank == 0
        return _train_run(cfg, resume, overwrite, echo if main else _quiet, main, world, t_start)
    finally:
        if joined:
            import torch.distributed as dist

            # The trainer's DDP wrapper holds the group; it sits in reference cycles
            # (trainer <-> callbacks), so collect it first: a group still referenced at
            # interpreter exit can abort there when gloo tears its threads down.
            gc.collect()
            dist.destroy_process_group()


def _train_run(
    cfg: Config, resume: bool, overwrite: bool, echo: Echo, main: bool, world: int,
    t_start: float,
) -> RunResult:  # fmt: skip
    from optiscope.training._distributed import barrier

    run_dir = cfg.run_dir
    # 1. Config: checked before anything is built; 2. build: every config error raised
    # before the run directory is touched.
    _check_run_dir(run_dir, resume, overwrite)
    apply_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    comps = build_components(cfg)
    instruments = instruments_callback(cfg, comps, world)
    if main:
        _reset_run_dir(run_dir, resume)
        (run_dir / "config.toml").write_text(config_to_toml(cfg), encoding="utf-8")
    barrier()
    # Under torchrun every rank computes its share of the landscapes; only rank 0 keeps
    # files, so the others draw into a scratch directory that is removed at the end.
    fig_dir = run_dir / "figures" if main else Path(tempfile.mkdtemp(prefix="optiscope-"))
    fig_dir.mkdir(exist_ok=True)
    echo(f"run directory: {run_dir}" + (f" ({world} processes)" if world > 1 else ""))
    echo(f"  {report.describe_model(cfg, comps)}; {report.describe_optimizer(cfg)}")
    # 3. Train: the schedule and the LR range test first, then the training itself.
    figures: list[FigureSpec] = []
    lr_info: dict[str, Any] = {}
    if main:
        figures = schedule_figures(cfg, comps, fig_dir)
        if cfg.lr_find.enabled:
            spec, lr_info = lr_find_stage(
                cfg, comps, fig_dir / "lr_find.png", run_dir, reuse=resume, echo=echo
            )
            figures.append(spec)
    barrier()
    trainer, t_train = train(cfg, comps, run_dir, resume, echo, main, instruments)
    barrier()  # the trajectory snapshots rank 0 wrote are complete from here on
    # 4. Analyse the trained weights (and draw what the instruments recorded on the way).
    dynamics: dict[str, Any] = {}
    try:
        if main:
            figures.append(curves_figure(comps, trainer, fig_dir))
            if instruments is not None:
                dynamics, specs = instruments_outputs(cfg, instruments, run_dir, fig_dir)
                figures += specs
        analysis = analyse(cfg, comps, run_dir, echo, fig_dir=fig_dir, curvature=main)
    finally:
        if not main:
            shutil.rmtree(fig_dir, ignore_errors=True)
    # 5. Report.
    numbers = report.run_numbers(cfg, comps, trainer, t_train, lr_info, analysis)
    numbers.update(dynamics)
    numbers["processes"] = world
    numbers["total seconds"] = time.perf_counter() - t_start
    report_path = None
    if main:
        report.write_json(run_dir / "summary.json", numbers)
        if cfg.report.enabled:
            report_path = report.write_run_report(
                cfg, comps, numbers, figures + analysis.figures, analysis.notes, run_dir
            )
    barrier()
    echo(_done_line(numbers))
    return RunResult(run_dir, report_path, numbers)


def _done_line(numbers: dict[str, Any]) -> str:
    acc = numbers.get("final val accuracy")
    loss = numbers.get("final val loss")
    return (
        f"done in {numbers['total seconds']:.1f}s: final val loss "
        + (f"{loss:.4f}" if loss is not None else "-")
        + (f", val accuracy {acc:.4f}" if acc is not None else "")
    )


def lr_find_run(cfg: Config, *, out: str | os.PathLike | None = None) -> LRFindRun:
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
    cfg: Config, checkpoint: str | os.PathLike, *, out: str | os.PathLike | None = None,
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
        InputFileNotFoundError: ``checkpoint`` does not exist.
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
        report_path = report.update_report(target, analysis.figures, analysis.numbers)
    return LandscapeRun([f.file for f in analysis.figures], report_path)


def analyse(
    cfg: Config, comps: Components, run_dir: Path, echo: Echo, *,
    fig_dir: Path | None = None, curvature: bool = True,
) -> Analysis:  # fmt: skip
    """Landscape and curvature figures around the model's current weights.

    A stage that needs an optional package which is not installed becomes a note in the
    report (the run keeps its report); any other error propagates with its traceback.

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
    if not (cfg.landscape.enabled or (cfg.curvature.enabled and curvature)):
        return out
    fig_dir = run_dir / "figures" if fig_dir is None else fig_dir
    loader = comps.train_loader if cfg.landscape.split == "train" else comps.val_loader
    data, targets = evaluation_data(loader, cfg.landscape.max_batches)
    if targets is not None:
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
    # The model is trained and checkpointed by now. The one failure a stage is expected to
    # have is an optional package that is not installed: that becomes a note, and the run
    # keeps its report. Anything else is a bug (ours or the model's) and shows its traceback.
    try:
        part = compute()
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] == "optiscope":
            raise
        note = f"{what} skipped: the {e.name.split('.')[0]} package is not installed"
        echo(f"  {note}")
        out.notes.append(note)
        return
    out.figures += part.figures
    out.numbers.update(part.numbers)
    out.notes += part.notes
    out.seconds += part.seconds


def load_weights(model: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load a trainer checkpoint's (or a plain state_dict's) weights into ``model``.

    Raises:
        InputFileNotFoundError: No such file (a FileNotFoundError).
        ConfigError: Not loadable, or saved from a model with other names or shapes.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise InputFileNotFoundError(f"checkpoint not found: {path}")
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
    mismatch = model_mismatch(model, state)
    if mismatch is not None:
        raise ConfigError(f"{path} was saved from another model than [model] describes: {mismatch}")
    with torch.no_grad():
        model.load_state_dict(state)


def with_out_dir(cfg: Config, out_dir: str | os.PathLike | None) -> Config:
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
                     "report.html", "lr_find.json", "instruments.json", "config.toml"):  # fmt: skip
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def _join_process_group(cfg: Config) -> tuple[int, int, bool]:
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
