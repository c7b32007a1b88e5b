"""The schema of a run config: one dataclass per TOML table, each key with its rule.

Each key is declared with :func:`_opt`: its default, a sentence saying what is allowed
(used verbatim in error messages), and a check or a tuple of choices. ``SECTIONS`` lists
the tables in the order a config file shows them; :func:`optiscope.run.config.parse_config`
validates against it.

Example:
    >>> sorted(SECTIONS)[:3], TrainSection().loss
    (['clipping', 'curvature', 'data'], 'cross_entropy')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "IMPORT_PATH",
    "LOSSES",
    "OPTIMIZERS",
    "SECTIONS",
    "OPEN_SECTIONS",
    "RunSection",
    "DataSection",
    "ModelSection",
    "OptimizerSection",
    "ScheduleSection",
    "ClippingSection",
    "TrainSection",
    "LRFindSection",
    "LandscapeSection",
    "CurvatureSection",
    "InstrumentsSection",
    "ReportSection",
    "NOISE_SOURCES",
]


# `package.module:factory` (dotted module, a colon, a dotted attribute path).
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")

# Built-in losses; "model" means the model computes its own (output .loss or ["loss"]).
LOSSES = ("cross_entropy", "mse", "model")


def _opt(default: Any, allowed: str, check=None, choices: tuple | None = None) -> Any:
    """A config key: its default, a human description of allowed values and a check."""
    meta = {"allowed": allowed, "check": check, "choices": choices}
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _ge(lo: float):
    return lambda v: v >= lo


def _gt(lo: float):
    return lambda v: v > lo


def _open01(v: float) -> bool:
    return 0.0 < v < 1.0


def _run_name(v: str) -> bool:
    # The name becomes a directory under out_dir, so it must be one path component.
    return bool(v) and v not in (".", "..") and not any(c in v for c in "/\\\0")


def _model_name(v: str) -> bool:
    return v in ("mlp", "cnn") or bool(IMPORT_PATH.match(v))


def _data_name(v: str) -> bool:
    return v == "digits" or bool(IMPORT_PATH.match(v))


def _loss_name(v: str) -> bool:
    return v in LOSSES or bool(IMPORT_PATH.match(v))


def _range(v: list) -> bool:
    return len(v) == 2 and v[0] < v[1]


def _bins_pair(v: list) -> bool:
    return len(v) == 2 and all(x >= 1 and x == int(x) for x in v)


def _betas(v: list) -> bool:
    return len(v) == 2 and all(0.0 <= b < 1.0 for b in v)


@dataclass
class RunSection:
    """``[run]``: naming, seeding and where the run directory goes."""

    name: str = _opt("run", "a non-empty name without '/' or '\\'", _run_name)
    seed: int = _opt(0, "an int >= 0", _ge(0))
    out_dir: str = _opt("runs", "a directory path", lambda v: bool(v))
    device: str = _opt("cpu", "one of cpu, cuda, auto", choices=("cpu", "cuda", "auto"))
    threads: int = _opt(0, "an int >= 0 (0: torch's default)", _ge(0))


@dataclass
class DataSection:
    """``[data]``: the built-in digits or ``package.module:factory`` -> (train, val) loaders.

    A factory's loaders may yield any batch layout optiscope's batch concept reads
    (:mod:`optiscope.batch_loss`): ``(x, y)``, ``(x1, ..., xn, y)`` or dicts.
    """

    name: str = _opt("digits", "'digits' or an import path 'package.module:factory'", _data_name)
    batch_size: int = _opt(64, "an int >= 1", _ge(1))
    val_fraction: float = _opt(0.2, "a float in (0, 1)", _open01)
    params: dict = _opt({}, "keyword arguments of the factory")


@dataclass
class ModelSection:
    """``[model]``: ``mlp``/``cnn`` (the built-in digits models) or an import path.

    A factory's model may compute its own loss (``[train] loss = "model"``).
    """

    name: str = _opt("mlp", "'mlp', 'cnn' or an import path 'package.module:factory'", _model_name)
    params: dict = _opt({}, "keyword arguments of the factory")


@dataclass
class OptimizerSection:
    """``[optimizer]``: which torch optimizer and its hyper-parameters."""

    name: str = _opt("adamw", "one of " + ", ".join(OPTIMIZERS), choices=OPTIMIZERS)
    lr: float = _opt(1e-3, "a float > 0", _gt(0.0))
    weight_decay: float = _opt(0.01, "a float >= 0", _ge(0.0))
    momentum: float = _opt(0.9, "a float in [0, 1)", lambda v: 0.0 <= v < 1.0)
    betas: list = _opt([0.9, 0.999], "two floats in [0, 1)", _betas)
    nesterov: bool = _opt(False, "true or false")


@dataclass
class ScheduleSection:
    """``[schedule]``: an optiscope schedule by name, its parameters, and warmup."""

    name: str = _opt("constant", "a schedule name known to optiscope.schedules", lambda v: bool(v))
    interval: str = _opt("step", "one of step, epoch", choices=("step", "epoch"))
    warmup_epochs: float = _opt(
        0.0, "a float >= 0 (converted to warmup_steps when the schedule takes them)", _ge(0.0)
    )
    params: dict = _opt({}, "keyword arguments of the schedule")


@dataclass
class ClippingSection:
    """``[clipping]``: a clipper by name (``none``, ``norm``, ...) and its parameters."""

    name: str = _opt("none", "'none' or a clipper name known to optiscope.clipping", bool)
    params: dict = _opt({}, "keyword arguments of the clipper")


@dataclass
class TrainSection:
    """``[train]``: epochs, precision, accumulation, checkpoints, logging."""

    epochs: int = _opt(10, "an int >= 1", _ge(1))
    precision: str = _opt("32", "one of 32, bf16, 16-mixed", choices=("32", "bf16", "16-mixed"))
    grad_accum_steps: int = _opt(1, "an int >= 1", _ge(1))
    loss: str = _opt(
        "cross_entropy",
        "'cross_entropy', 'mse', 'model' (the model returns its own loss) or an import path "
        "'package.module:fn'",
        _loss_name,
    )
    log_interval: int = _opt(10, "an int >= 1", _ge(1))
    checkpoint_every_steps: int = _opt(0, "an int >= 0 (0: at epoch ends only)", _ge(0))
    nonfinite: str = _opt("skip", "one of skip, raise, ignore", choices=("skip", "raise", "ignore"))
    early_stopping_patience: int = _opt(0, "an int >= 0 (0: off)", _ge(0))
    monitor: str = _opt(
        "val_loss",
        "one of val_loss, val_accuracy, train_loss",
        choices=("val_loss", "val_accuracy", "train_loss"),
    )
    progress: bool = _opt(False, "true or false")
    trajectory_every_epochs: int = _opt(1, "an int >= 1", _ge(1))


@dataclass
class LRFindSection:
    """``[lr_find]``: the LR range test drawn in the report."""

    enabled: bool = _opt(True, "true or false")
    start_lr: float = _opt(1e-7, "a float > 0", _gt(0.0))
    end_lr: float = _opt(10.0, "a float > 0", _gt(0.0))
    num_iter: int = _opt(100, "an int >= 2", _ge(2))
    mode: str = _opt("exp", "one of exp, linear", choices=("exp", "linear"))


@dataclass
class LandscapeSection:
    """``[landscape]``: which loss-landscape figures to compute, and their resolution."""

    enabled: bool = _opt(True, "true or false")
    line: bool = _opt(True, "true or false")
    plane: bool = _opt(True, "true or false")
    surface: bool = _opt(True, "true or false")
    trajectory: bool = _opt(True, "true or false")
    num_directions: int = _opt(3, "an int >= 1", _ge(1))
    line_points: int = _opt(41, "an int >= 3", _ge(3))
    plane_points: int = _opt(21, "an int >= 3", _ge(3))
    alpha_range: list = _opt([-1.0, 1.0], "two floats [lo, hi] with lo < hi", _range)
    normalization: str = _opt(
        "filter", "one of filter, layer, model, none", choices=("filter", "layer", "model", "none")
    )
    split: str = _opt("train", "one of train, val", choices=("train", "val"))
    max_batches: int = _opt(0, "an int >= 0 (0: the whole split)", _ge(0))
    seed: int = _opt(0, "an int >= 0", _ge(0))


@dataclass
class CurvatureSection:
    """``[curvature]``: top Hessian eigenvalue(s) and trace at the final weights."""

    enabled: bool = _opt(True, "true or false")
    top_k: int = _opt(1, "an int >= 1", _ge(1))
    max_iter: int = _opt(50, "an int >= 1", _ge(1))
    trace_samples: int = _opt(20, "an int >= 0 (0: skip the trace)", _ge(0))
    layerwise: bool = _opt(True, "true or false (top eigenvalue and trace per layer)")
    max_batches: int = _opt(0, "an int >= 0 (0: the whole split)", _ge(0))


# Where the noise scale's second batch size comes from (optiscope.instruments).
NOISE_SOURCES = ("auto", "micro_batches", "ddp", "split")


@dataclass
class InstrumentsSection:
    """``[instruments]``: training-dynamics quantities recorded while training.

    Names in ``quantities`` are those of ``optiscope.instruments.QUANTITIES`` (checked when
    the config is parsed); the history goes to ``instruments.json`` and the report.
    """

    enabled: bool = _opt(False, "true or false")
    quantities: list = _opt(
        ["loss", "grad_norm", "layers", "distance"],
        "a non-empty list of names from optiscope.instruments.QUANTITIES",
    )
    every: int = _opt(1, "an int >= 1 (optimizer steps between the cheap quantities)", _ge(1))
    sharpness_every: int = _opt(16, "an int >= 1", _ge(1))
    grad_tests_every: int = _opt(16, "an int >= 1", _ge(1))
    trace_samples: int = _opt(8, "an int >= 2", _ge(2))
    hist_bins: int = _opt(100, "an int >= 1 (bins of grad_hist)", _ge(1))
    hist_bins_2d: list = _opt(
        [40, 50], "two ints >= 1 [gradient bins, parameter bins] (of grad_hist_2d)", _bins_pair
    )
    hist_per_layer: bool = _opt(False, "true or false (also each parameter tensor's histograms)")
    hist_range: float = _opt(
        0.0, "a number >= 0 (the gradient histograms' range +-r; 0: max |g| each time)", _ge(0)
    )
    noise_source: str = _opt("auto", "one of " + ", ".join(NOISE_SOURCES), choices=NOISE_SOURCES)
    probe_batch_size: int = _opt(
        0, "an int >= 0 (0: the first training batch is the probe batch)", _ge(0)
    )


@dataclass
class ReportSection:
    """``[report]``: whether to write ``report.html``."""

    enabled: bool = _opt(True, "true or false")


SECTIONS: dict[str, type] = {
    "run": RunSection,
    "data": DataSection,
    "model": ModelSection,
    "optimizer": OptimizerSection,
    "schedule": ScheduleSection,
    "clipping": ClippingSection,
    "train": TrainSection,
    "lr_find": LRFindSection,
    "landscape": LandscapeSection,
    "curvature": CurvatureSection,
    "instruments": InstrumentsSection,
    "report": ReportSection,
}


# Sections whose unknown keys are the keyword arguments of what `name` names.
OPEN_SECTIONS = ("data", "model", "schedule", "clipping")
