"""The run config: a TOML file validated against a schema, with errors that name the key.

A config has one table per concern; every key is optional and defaults to the demo's
choice. ``[model]``, ``[data]``, ``[schedule]`` and ``[clipping]`` take a ``name`` plus
the keyword arguments of what it names (checked against that factory's signature when the
run is built)::

    [run]
    name = "digits-mlp"
    seed = 0

    [model]
    name = "mlp"            # "mlp", "cnn" or "package.module:factory"
    hidden = [256, 128]

    [optimizer]
    name = "adamw"
    lr = 3e-3

    [schedule]
    name = "WarmupCosineSchedule"   # any name optiscope.schedules.get_schedule knows
    warmup_epochs = 1

    [clipping]
    name = "norm"
    max_norm = 1.0

    [train]
    epochs = 12
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "RunConfig",
    "load_config",
    "parse_config",
    "config_to_toml",
    "IMPORT_PATH",
    "OPTIMIZERS",
]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key and what is allowed."""


# `package.module:factory` (dotted module, a colon, a dotted attribute path).
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")


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
    return v in ("cross_entropy", "mse") or bool(IMPORT_PATH.match(v))


def _range(v: list) -> bool:
    return len(v) == 2 and v[0] < v[1]


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
    """``[data]``: the built-in digits or ``package.module:factory`` -> (train, val) loaders."""

    name: str = _opt("digits", "'digits' or an import path 'package.module:factory'", _data_name)
    batch_size: int = _opt(64, "an int >= 1", _ge(1))
    val_fraction: float = _opt(0.2, "a float in (0, 1)", _open01)
    params: dict = _opt({}, "keyword arguments of the factory")


@dataclass
class ModelSection:
    """``[model]``: ``mlp``/``cnn`` (the built-in digits models) or an import path."""

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
        "cross_entropy", "'cross_entropy', 'mse' or an import path 'package.module:fn'", _loss_name
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
    max_batches: int = _opt(0, "an int >= 0 (0: the whole split)", _ge(0))


@dataclass
class ReportSection:
    """``[report]``: whether to write ``report.html``."""

    enabled: bool = _opt(True, "true or false")


_SECTIONS: dict[str, type] = {
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
    "report": ReportSection,
}
# Sections whose unknown keys are the keyword arguments of what `name` names.
_OPEN_SECTIONS = ("data", "model", "schedule", "clipping")


@dataclass
class RunConfig:
    """A validated run config (every table present, defaults filled in).

    Build it with :func:`load_config` (a file) or :func:`parse_config` (text or a dict).

    Example:
        >>> cfg = parse_config('[train]\\nepochs = 3')
        >>> cfg.train.epochs, cfg.optimizer.name
        (3, 'adamw')
    """

    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    clipping: ClippingSection = field(default_factory=ClippingSection)
    train: TrainSection = field(default_factory=TrainSection)
    lr_find: LRFindSection = field(default_factory=LRFindSection)
    landscape: LandscapeSection = field(default_factory=LandscapeSection)
    curvature: CurvatureSection = field(default_factory=CurvatureSection)
    report: ReportSection = field(default_factory=ReportSection)
    source: str = ""

    @property
    def run_dir(self) -> Path:
        """``out_dir / name``."""
        return Path(self.run.out_dir) / self.run.name

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict, ``params`` flattened back into their tables."""
        out: dict[str, dict[str, Any]] = {}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            params = section.pop("params", {})
            section.update(params)
            out[name] = section
        return out


def _describe(value: Any) -> str:
    return repr(value) if not isinstance(value, bool) else str(value).lower()


def _check_kind(where: str, key: str, value: Any, default: Any, allowed: str) -> Any:
    bad = ConfigError(f"{where} {key}: must be {allowed}, got {_describe(value)}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            raise bad
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad
    elif isinstance(default, list):
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value
        ):
            raise bad
        value = [float(v) for v in value]
        if any(math.isnan(v) or math.isinf(v) for v in value):
            raise bad
    return value


def _unknown(where: str, kind: str, key: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {kind} {key!r}{where}{hint}; allowed: {', '.join(allowed)}")


def _build_section(name: str, cls: type, table: Any) -> Any:
    where = f"[{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {_describe(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "params"}
    kwargs: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in table.items():
        f = fields.get(key)
        if f is None:
            if name in _OPEN_SECTIONS:
                params[key] = value
                continue
            raise _unknown(f" in {where}", "key", key, sorted(fields))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value = _check_kind(where, key, value, default, f.metadata["allowed"])
        choices, check = f.metadata["choices"], f.metadata["check"]
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{where} {key}: must be one of {', '.join(choices)}, got {_describe(value)}"
            )
        if check is not None and not check(value):
            raise ConfigError(f"{where} {key}: must be {f.metadata['allowed']}, got {value!r}")
        kwargs[key] = value
    if name in _OPEN_SECTIONS:
        kwargs["params"] = params
    return cls(**kwargs)


def parse_config(source: str | dict[str, Any], *, origin: str = "config") -> RunConfig:
    """Validate TOML text (or an already parsed dict) into a :class:`RunConfig`.

    Args:
        source: TOML text, or the dict ``tomllib`` would return for it.
        origin: Where it came from, prefixed to error messages (a file name).

    Returns:
        The validated config with defaults filled in.

    Raises:
        ConfigError: Invalid TOML, an unknown table or key, a value of the wrong type or
            outside its range; the message names the key and what is allowed.

    Example:
        >>> parse_config('[optimizer]\\nlr = -1')
        Traceback (most recent call last):
        ...
        optiscope.app.config.ConfigError: config: [optimizer] lr: must be a float > 0, got -1.0
    """
    text = ""
    if isinstance(source, str):
        text = source
        try:
            data = tomllib.loads(source)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{origin}: invalid TOML: {e}") from None
    elif isinstance(source, dict):
        data = source
    else:
        raise TypeError(f"source must be TOML text or a dict, got {type(source).__name__}")
    sections: dict[str, Any] = {}
    try:
        for key, table in data.items():
            cls = _SECTIONS.get(key)
            if cls is None:
                raise _unknown("", "table", key, list(_SECTIONS))
            sections[key] = _build_section(key, cls, table)
        cfg = RunConfig(**sections, source=text)
        lf = cfg.lr_find
        if lf.end_lr <= lf.start_lr:
            raise ConfigError(
                f"[lr_find] end_lr: must be > start_lr ({lf.start_lr!r}), got {lf.end_lr!r}"
            )
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    return cfg


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a TOML config file.

    Args:
        path: The ``.toml`` file.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: Invalid TOML or an invalid key or value (see :func:`parse_config`).

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
        >>> _ = p.write_text('[run]\\nname = "x"')
        >>> load_config(p).run.name
        'x'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    return parse_config(text, origin=str(path))


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON strings are TOML basic strings once DEL, which TOML wants escaped, is.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write a {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _toml_value(k)


def config_to_toml(cfg: RunConfig) -> str:
    """The full config (defaults included) as TOML text that :func:`parse_config` reads back.

    Example:
        >>> cfg = parse_config('[train]\\nepochs = 3')
        >>> parse_config(config_to_toml(cfg)).train.epochs
        3
    """
    lines: list[str] = []
    for name, table in cfg.to_dict().items():
        lines.append(f"[{name}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)
