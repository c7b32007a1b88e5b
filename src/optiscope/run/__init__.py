"""The run pipeline behind ``optiscope train`` and ``optiscope demo``: config -> run dir.

:mod:`optiscope.app.config` validates a TOML config; :mod:`optiscope.app.build` builds the
model, data, optimizer, schedule and clipper it names; :mod:`optiscope.app.pipeline`
trains, draws the figures and writes the report; :mod:`optiscope.app.tools` runs the LR
range test or the landscape on their own. The demo is the same pipeline with a built-in
config (:mod:`optiscope.app.demo`).
"""

from optiscope.app.build import Components, build_components
from optiscope.app.config import ConfigError, RunConfig, config_to_toml, load_config, parse_config
from optiscope.app.demo import DEMO_CONFIG, demo_config
from optiscope.app.pipeline import RunResult, train_run
from optiscope.app.tools import LandscapeRun, LRFindRun, landscape_run, lr_find_run

__all__ = [
    "Components",
    "ConfigError",
    "DEMO_CONFIG",
    "LRFindRun",
    "LandscapeRun",
    "RunConfig",
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
