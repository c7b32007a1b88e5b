"""The run pipeline behind ``optiscope train`` and ``optiscope demo``: config -> run dir.

:mod:`optiscope.app.config` validates a TOML config; :mod:`optiscope.app.pipeline` builds
the model, data, optimizer, schedule and clipper it names, trains, draws the figures and
writes the report. The demo is the same pipeline with a built-in config.
"""

from optiscope.app.config import ConfigError, RunConfig, config_to_toml, load_config, parse_config

__all__ = ["ConfigError", "RunConfig", "config_to_toml", "load_config", "parse_config"]
