"""The run behind ``optiscope train`` and ``optiscope demo``: a config in, a run directory out.

A config flows one way, one module per stage:

1. parse and validate: :mod:`optiscope.run.config` (the keys: :mod:`optiscope.run.schema`);
2. build: :mod:`optiscope.run.build` (model, data, optimizer, loss, schedule, clipper);
3. train: :mod:`optiscope.run.train` (schedule figures, LR range test, the trainer), with
   the ``[instruments]`` callback, its history and figures from :mod:`optiscope.run.dynamics`;
4. analyse: :mod:`optiscope.run.analyse` (landscape and curvature figures);
5. report: :mod:`optiscope.run.report` (summary numbers, ``report.html``);

and :mod:`optiscope.run.pipeline` runs them top to bottom (:func:`train_run`), or one
stage on its own (:func:`lr_find_run`, :func:`landscape_run`). The demo is the same
pipeline with a built-in config (:mod:`optiscope.run.demo`).

Names load on first use, so ``optiscope --help`` does not import torch.

Example:
    >>> from optiscope.run import parse_config
    >>> parse_config("[train]\\nepochs = 2").train.epochs
    2
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optiscope.run.build import Components, build_components
    from optiscope.run.config import Config, ConfigError, config_to_toml, load_config, parse_config
    from optiscope.run.demo import DEMO_CONFIG, demo_config
    from optiscope.run.pipeline import (
        LandscapeRun,
        LRFindRun,
        RunResult,
        landscape_run,
        lr_find_run,
        train_run,
    )

_EXPORTS = {
    "Components": "build",
    "build_components": "build",
    "Config": "config",
    "ConfigError": "config",
    "config_to_toml": "config",
    "load_config": "config",
    "parse_config": "config",
    "DEMO_CONFIG": "demo",
    "demo_config": "demo",
    "LRFindRun": "pipeline",
    "LandscapeRun": "pipeline",
    "RunResult": "pipeline",
    "landscape_run": "pipeline",
    "lr_find_run": "pipeline",
    "train_run": "pipeline",
}

__all__ = [
    "Components",
    "Config",
    "ConfigError",
    "DEMO_CONFIG",
    "LRFindRun",
    "LandscapeRun",
    "RunResult",
    "build_components",
    "config_to_toml",
    "demo_config",
    "landscape_run",
    "load_config",
    "lr_find_run",
    "parse_config",
    "train_run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optiscope.run' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"optiscope.run.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
