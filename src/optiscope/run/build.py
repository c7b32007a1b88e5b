"""Build: the data loaders, model, optimizer, loss, schedule and clipper a config names.

The second stage of a run, after :mod:`optiscope.run.config` validated the config. Every
bad value is a :class:`~optiscope.run.config.ConfigError` naming its key, raised before
anything is trained or written. Factories named by an import path are called with the
table's keys as keyword arguments, checked against the factory's signature first so a
typo is reported with the allowed names; what the factory itself raises propagates.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from optiscope.run._calls import (
    call_factory,
    check_keys,
    construct,
    keyword_names,
    registry_lookup,
    resolve_import,
)
from optiscope.run.config import Config, ConfigError

__all__ = [
    "Components",
    "build_components",
    "build_data",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "build_clipper",
    "build_loss",
    "pick_device",
    "schedule_lengths",
    "batches_per_epoch",
]


def pick_device(name: str) -> torch.device:
    """The device ``[run] device`` names.

    Args:
        name: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present, else CPU).

    Returns:
        The torch device.

    Raises:
        ConfigError: ``"cuda"`` without a CUDA device.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("[run] device: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def build_data(cfg: Config) -> tuple[Any, Any]:
    """``(train_loader, val_loader)`` for ``[data]``.

    The built-in ``digits`` are split by ``[run] seed``; they come as ``(B, 1, 8, 8)``
    images when the model is the built-in CNN. A factory ``package.module:fn`` gets the
    table's other keys, plus ``batch_size``, ``val_fraction`` and ``seed`` when its
    signature takes them, and must return ``(train_loader, val_loader)``; their batches
    may have any layout :mod:`optiscope.batch_loss` reads (tuples, several inputs, dicts).

    Args:
        cfg: The run config.

    Returns:
        ``(train_loader, val_loader)``.

    Raises:
        ConfigError: Unknown keys, or a factory that returns something else.

    Example:
        >>> from optiscope.run.config import parse_config
        >>> train, val = build_data(parse_config("[data]\\nbatch_size = 100"))
        >>> train.batch_size, len(train.dataset) + len(val.dataset)
        (100, 1797)
    """
    d = cfg.data
    if d.name == "digits":
        try:
            import sklearn  # noqa: F401 - the digits ship with scikit-learn
        except ModuleNotFoundError:
            raise ConfigError(
                "[data] name: the digits data set needs scikit-learn: pip install 'optiscope[data]'"
            ) from None
        from optiscope.data import digits_loaders

        unknown = sorted(set(d.params) - {"image", "shuffle"})
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r} in [data] for digits; allowed: "
                "name, batch_size, val_fraction, image, shuffle"
            )
        kwargs = {"batch_size": d.batch_size, "val_fraction": d.val_fraction, "seed": cfg.run.seed}
        params = {"image": cfg.model.name == "cnn", **kwargs, **d.params}
        out = construct("[data]", digits_loaders, params, "digits")
    else:
        fn = resolve_import(d.name, "[data] name")
        names, var_kw = keyword_names(fn)
        given = {"batch_size": d.batch_size, "val_fraction": d.val_fraction, "seed": cfg.run.seed}
        extra = {k: v for k, v in given.items() if (k in names or var_kw) and k not in d.params}
        out = call_factory("[data]", fn, {**extra, **d.params}, d.name)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ConfigError(
            f"[data] name: {d.name!r} must return (train_loader, val_loader), "
            f"got {type(out).__name__}"
        )
    return out[0], out[1]


def build_model(cfg: Config) -> nn.Module:
    """The ``nn.Module`` for ``[model]`` (``mlp``, ``cnn`` or a factory), seeded.

    Args:
        cfg: The run config (``[run] seed`` seeds the initial weights).

    Returns:
        The model (on the CPU).

    Raises:
        ConfigError: Unknown keys, a bad value for a built-in model, a factory that
            returns no module or one without trainable parameters.

    Example:
        >>> from optiscope.run.config import parse_config
        >>> m = build_model(parse_config("[model]\\nname = 'mlp'\\nhidden = [8]"))
        >>> sum(p.numel() for p in m.parameters())
        610
    """
    m = cfg.model
    if m.name in ("mlp", "cnn"):
        from optiscope.models import digits_cnn, digits_mlp

        fn = digits_mlp if m.name == "mlp" else digits_cnn
        label = fn.__name__
        call = construct
    else:
        fn = resolve_import(m.name, "[model] name")
        label = m.name
        call = call_factory
    # Seeded so the initial weights, and hence the whole run, are reproducible.
    torch.manual_seed(cfg.run.seed)
    model = call("[model]", fn, dict(m.params), label)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"[model] name: {label} must return an nn.Module, got {type(model)}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"[model] name: {label} returned a model with no trainable parameters")
    return model


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """The torch optimizer for ``[optimizer]``.

    Weight decay goes to weight matrices and conv kernels only: decaying biases and norm
    scales hurts and is what nanoGPT, timm and HF leave out too.

    Args:
        cfg: The run config.
        model: The model whose trainable parameters to optimise.

    Returns:
        The optimizer (two param groups: with and without weight decay).

    Raises:
        ConfigError: torch rejected a hyper-parameter (e.g. Nesterov without momentum).

    Example:
        >>> from optiscope.run.config import parse_config
        >>> cfg = parse_config("[optimizer]\\nname = 'sgd'\\nlr = 0.1")
        >>> opt = build_optimizer(cfg, torch.nn.Linear(2, 2))
        >>> [g["weight_decay"] for g in opt.param_groups]
        [0.01, 0.0]
    """
    o = cfg.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]
    ]
    if o.name in ("adamw", "adam"):
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        kwargs: dict[str, Any] = {
            "lr": o.lr,
            "weight_decay": o.weight_decay,
            "betas": tuple(o.betas),
        }
    elif o.name == "sgd":
        cls = torch.optim.SGD
        kwargs = {
            "lr": o.lr,
            "weight_decay": o.weight_decay,
            "momentum": o.momentum,
            "nesterov": o.nesterov,
        }
    else:
        cls = torch.optim.RMSprop
        kwargs = {"lr": o.lr, "weight_decay": o.weight_decay, "momentum": o.momentum}
    return construct("[optimizer]", cls, {"params": groups, **kwargs}, o.name)


def build_loss(cfg: Config) -> Callable[..., torch.Tensor] | None:
    """The ``loss_fn`` for ``[train] loss`` (None: the model computes its own loss).

    Args:
        cfg: The run config.

    Returns:
        ``CrossEntropyLoss``, ``MSELoss``, None for ``"model"`` (the model returns
        ``.loss`` or ``["loss"]``; see :mod:`optiscope.batch_loss`), or what the import
        path names (a class is instantiated without arguments, a function is used as is).

    Raises:
        ConfigError: The import path cannot be resolved.

    Example:
        >>> from optiscope.run.config import parse_config
        >>> build_loss(parse_config(""))
        CrossEntropyLoss()
    """
    name = cfg.train.loss
    if name == "cross_entropy":
        return nn.CrossEntropyLoss()
    if name == "mse":
        return nn.MSELoss()
    if name == "model":
        return None
    fn = resolve_import(name, "[train] loss")
    # A class (nn.Module subclass) is instantiated; a function is used as is.
    return fn() if inspect.isclass(fn) else fn


def schedule_lengths(cfg: Config, steps_per_epoch: int) -> tuple[int, int]:
    """``(total, warmup)`` in the schedule's unit (optimizer steps, or epochs)."""
    if cfg.schedule.interval == "epoch":
        total = cfg.train.epochs
        warmup = math.ceil(cfg.schedule.warmup_epochs)
    else:
        total = cfg.train.epochs * steps_per_epoch
        warmup = round(cfg.schedule.warmup_epochs * steps_per_epoch)
    return total, warmup


def build_schedule(cfg: Config, steps_per_epoch: int) -> Any:
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
        >>> from optiscope.run.config import parse_config
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
    schedule = construct("[schedule]", schedules.get_schedule, {"name": s.name, **params}, s.name)
    if warmup > 0 and not takes_warmup:
        schedule = construct(
            "[schedule]",
            schedules.LinearWarmup,
            {"target_lr": None, "warmup_steps": warmup, "after": schedule},
            "linear_warmup",
        )
    return schedule


def _schedule_class(name: str) -> Any:
    from optiscope.schedules import SCHEDULES

    return registry_lookup("[schedule]", SCHEDULES, name, "schedule")


def build_clipper(cfg: Config) -> Any:
    """The clipper for ``[clipping]``, or None for ``name = "none"``.

    Args:
        cfg: The run config.

    Returns:
        An optiscope clipper (``NormClip``, ``ZClip``, ...) or None.

    Raises:
        ConfigError: Unknown name or key, or a bad value.

    Example:
        >>> from optiscope.run.config import parse_config
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
    return construct("[clipping]", get_clipper, {"name": c.name, **c.params}, c.name)


def batches_per_epoch(loader: Any) -> int:
    """Batches one process sees per epoch (under torch.distributed: its shard's share).

    Raises:
        ConfigError: The loader has no length.
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    dataset = getattr(loader, "dataset", None)
    batch = getattr(loader, "batch_size", None)
    if world > 1 and dataset is not None and batch:
        # What the trainer's DistributedSampler gives each rank (padded to equal shards).
        per_rank = math.ceil(len(dataset) / world)
        return per_rank // batch if loader.drop_last else math.ceil(per_rank / batch)
    try:
        return len(loader)
    except TypeError:
        raise ConfigError("[data] name: the train loader must have a length") from None


@dataclass
class Components:
    """Everything a run needs, built from a config."""

    model: nn.Module
    train_loader: Any
    val_loader: Any
    optimizer: torch.optim.Optimizer
    schedule: Any
    clipper: Any
    loss_fn: Callable[..., torch.Tensor] | None
    device: torch.device
    steps_per_epoch: int

    @property
    def num_params(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def build_components(cfg: Config) -> Components:
    """Build everything ``cfg`` names; every problem is a ConfigError naming its key.

    Args:
        cfg: The run config.

    Returns:
        The model (on its device), loaders, optimizer, schedule, clipper and loss.

    Raises:
        ConfigError: Any bad value, raised before anything is trained or written.

    Example:
        >>> from optiscope.run.config import parse_config
        >>> c = build_components(parse_config("[data]\\nbatch_size = 128"))
        >>> c.steps_per_epoch, c.num_params
        (12, 50826)
    """
    device = pick_device(cfg.run.device)
    train_loader, val_loader = build_data(cfg)
    n_batches = batches_per_epoch(train_loader)
    if n_batches == 0:
        raise ConfigError("[data]: the train loader yields no batches")
    # The trainer steps once per full group of micro-batches and once for a partial last one.
    steps_per_epoch = math.ceil(n_batches / cfg.train.grad_accum_steps)
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    schedule = build_schedule(cfg, steps_per_epoch)
    return Components(
        model=model,
        train_loader=train_loader,
        val_loader=val_loader,
        optimizer=optimizer,
        schedule=schedule,
        clipper=build_clipper(cfg),
        loss_fn=build_loss(cfg),
        device=device,
        steps_per_epoch=steps_per_epoch,
    )
