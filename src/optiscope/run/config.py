"""Parse and validate: a TOML config checked against the schema, errors naming the key.

The first stage of a run. A config has one table per concern (the tables and their keys
are declared in :mod:`optiscope.run.schema`); every key is optional and defaults to the
demo's choice. ``[model]``, ``[data]``, ``[schedule]`` and ``[clipping]`` take a ``name``
plus the keyword arguments of what it names, checked against that factory's signature
when the run is built (:mod:`optiscope.run.build`).

Example:
    >>> cfg = parse_config('''
    ... [run]
    ... name = "digits-mlp"
    ...
    ... [model]
    ... name = "mlp"            # "mlp", "cnn" or "package.module:factory"
    ... hidden = [256, 128]
    ...
    ... [schedule]
    ... name = "warmup_cosine"  # any name in optiscope.schedules.SCHEDULES
    ... warmup_epochs = 1
    ...
    ... [train]
    ... loss = "model"          # the model computes its own loss (loss_fn=None)
    ... ''')
    >>> cfg.run_dir.name, cfg.model.params, cfg.schedule.params, cfg.train.loss
    ('digits-mlp', {'hidden': [256, 128]}, {}, 'model')
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

from optiscope._internal.errors import InputError, InputFileNotFoundError
from optiscope.run.schema import (
    IMPORT_PATH,
    OPEN_SECTIONS,
    OPTIMIZERS,
    SECTIONS,
    ClippingSection,
    CurvatureSection,
    DataSection,
    InstrumentsSection,
    LandscapeSection,
    LRFindSection,
    ModelSection,
    OptimizerSection,
    ReportSection,
    RunSection,
    ScheduleSection,
    TrainSection,
)

__all__ = [
    "ConfigError",
    "Config",
    "load_config",
    "parse_config",
    "config_to_toml",
    "IMPORT_PATH",
    "OPTIMIZERS",
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
]


class ConfigError(InputError, ValueError):
    """A config that cannot be used; the message names the key and what is allowed."""


@dataclass
class Config:
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
    instruments: InstrumentsSection = field(default_factory=InstrumentsSection)
    report: ReportSection = field(default_factory=ReportSection)
    source: str = ""

    @property
    def run_dir(self) -> Path:
        """``out_dir / name``."""
        return Path(self.run.out_dir) / self.run.name

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict, ``params`` flattened back into their tables."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
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
    elif isinstance(default, list) and default and isinstance(default[0], str):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
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
            if name in OPEN_SECTIONS:
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
    if name in OPEN_SECTIONS:
        kwargs["params"] = params
    return cls(**kwargs)


def parse_config(source: str | dict[str, Any], *, origin: str = "config") -> Config:
    """Validate TOML text (or an already parsed dict) into a :class:`Config`.

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
        optiscope.run.config.ConfigError: config: [optimizer] lr: must be a float > 0, got -1.0
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
            cls = SECTIONS.get(key)
            if cls is None:
                raise _unknown("", "table", key, list(SECTIONS))
            sections[key] = _build_section(key, cls, table)
        cfg = Config(**sections, source=text)
        lf = cfg.lr_find
        if lf.end_lr <= lf.start_lr:
            raise ConfigError(
                f"[lr_find] end_lr: must be > start_lr ({lf.start_lr!r}), got {lf.end_lr!r}"
            )
        if "instruments" in data:
            _check_instruments(cfg)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    return cfg


def _check_instruments(cfg: Config) -> None:
    # The names are optiscope.instruments' own (imported only when the table is there).
    from optiscope.instruments import QUANTITIES

    inst = cfg.instruments
    if inst.enabled and not inst.quantities:
        raise ConfigError("[instruments] quantities: must name at least one quantity")
    seen: set[str] = set()
    for name in inst.quantities:
        if name not in QUANTITIES:
            raise _unknown(" in [instruments] quantities", "quantity", name, list(QUANTITIES))
        if name in seen:
            raise ConfigError(f"[instruments] quantities: {name!r} is listed twice")
        seen.add(name)
    if (
        "noise_scale" in seen
        and inst.noise_source == "micro_batches"
        and cfg.train.grad_accum_steps == 1
    ):
        raise ConfigError(
            "[instruments] noise_source: 'micro_batches' needs [train] grad_accum_steps > 1 "
            "(or noise_source = 'auto', 'split' or 'ddp')"
        )


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a TOML config file.

    Args:
        path: The ``.toml`` file.

    Returns:
        The validated :class:`Config`.

    Raises:
        InputFileNotFoundError: ``path`` does not exist (a ``FileNotFoundError``).
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
        raise InputFileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    return parse_config(text, origin=str(path))


# --- writing a config back as TOML (tomllib only reads) ----------------------------
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


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
    return k if _BARE_KEY.fullmatch(k) else _toml_value(k)


def config_to_toml(cfg: Config) -> str:
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
