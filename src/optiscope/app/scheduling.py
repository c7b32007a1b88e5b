"""Build the schedule and the clipper a config names, with run lengths filled in."""

from __future__ import annotations

import math
from typing import Any

from optiscope.app._factories import call_with, check_keys, keyword_names, registry_lookup
from optiscope.app.config import ConfigError, RunConfig

__all__ = ["schedule_lengths", "build_schedule", "build_clipper"]


def schedule_lengths(cfg: RunConfig, steps_per_epoch: int) -> tuple[int, int]:
    """``(total, warmup)`` in the schedule's unit (optimizer steps, or epochs)."""
    if cfg.schedule.interval == "epoch":
        total = cfg.train.epochs
        warmup = math.ceil(cfg.schedule.warmup_epochs)
    else:
        total = cfg.train.epochs * steps_per_epoch
        warmup = round(cfg.schedule.warmup_epochs * steps_per_epoch)
    return total, warmup


def build_schedule(cfg: RunConfig, steps_per_epoch: int) -> Any:
    """The optiscope schedule for ``[schedule]``, with lengths and peak filled in.

    Keys the user leaves out are filled when the schedule takes them: its peak
    (the class's ``peak_param``: ``initial_lr``, ``max_lr``, ``peak_lr``, ...) from
    ``[optimizer] lr``, its length (``length_param``: ``total_steps``, ``T_max``,
    ``decay_steps``) from the run's length, and ``warmup_steps`` from ``warmup_epochs``. A
    schedule without its own warmup gets one in front (``LinearWarmup(after=...)``).

    Args:
        cfg: The run config.
        steps_per_epoch: Optimizer steps per epoch (converts epochs to steps).

    Returns:
        The schedule (absolute learning rates, for ``ScheduleLR``).

    Raises:
        ConfigError: Unknown name or key, a bad value, or warmup as long as the run.

    Example:
        >>> from optiscope.app.config import parse_config
        >>> cfg = parse_config(
        ...     "[optimizer]\\nlr = 0.1\\n[train]\\nepochs = 2\\n"
        ...     "[schedule]\\nname = 'cosine'\\nwarmup_epochs = 1"
        ... )
        >>> s = build_schedule(cfg, steps_per_epoch=10)
        >>> round(s(5), 6), round(s(10), 6), round(s(15), 6)
        (0.05, 0.1, 0.05)
    """
    from optiscope import schedules

    s = cfg.schedule
    total, warmup = schedule_lengths(cfg, steps_per_epoch)
    if warmup >= total:
        raise ConfigError(
            f"[schedule] warmup_epochs: must be shorter than [train] epochs "
            f"({cfg.train.epochs}), got {s.warmup_epochs!r}"
        )
    cls = _schedule_class(s.name)
    names, _ = keyword_names(cls)
    params = dict(s.params)
    takes_warmup = "warmup_steps" in names
    if cls.peak_param is not None:
        params.setdefault(cls.peak_param, cfg.optimizer.lr)
    if takes_warmup:
        params.setdefault("warmup_steps", warmup)
    length = total if takes_warmup or warmup == 0 else total - warmup
    if cls.length_param is not None:
        params.setdefault(cls.length_param, length)
    check_keys("[schedule]", cls, params, s.name)
    schedule = call_with("[schedule]", schedules.get_schedule, {"name": s.name, **params}, s.name)
    if warmup > 0 and not takes_warmup:
        schedule = call_with(
            "[schedule]",
            schedules.LinearWarmup,
            {"target_lr": None, "warmup_steps": warmup, "after": schedule},
            "linear_warmup",
        )
    return schedule


def _schedule_class(name: str) -> Any:
    from optiscope.schedules import SCHEDULES

    return registry_lookup("[schedule]", SCHEDULES, name, "schedule")


def build_clipper(cfg: RunConfig) -> Any:
    """The clipper for ``[clipping]``, or None for ``name = "none"``.

    Args:
        cfg: The run config.

    Returns:
        An optiscope clipper (``NormClip``, ``ZClip``, ...) or None.

    Raises:
        ConfigError: Unknown name or key, or a bad value.

    Example:
        >>> from optiscope.app.config import parse_config
        >>> build_clipper(parse_config("[clipping]\\nname = 'norm'\\nmax_norm = 0.5"))
        NormClip(max_norm=0.5, norm_type=2.0)
    """
    c = cfg.clipping
    if c.name == "none":
        if c.params:
            raise ConfigError(
                f"unknown key {next(iter(c.params))!r} in [clipping] for 'none'; "
                "set name to a clipper to give it parameters"
            )
        return None
    from optiscope.clipping import CLIPPERS, get_clipper

    cls = registry_lookup("[clipping]", CLIPPERS, c.name, "clipper")
    check_keys("[clipping]", cls, c.params, c.name)
    return call_with("[clipping]", get_clipper, {"name": c.name, **c.params}, c.name)
