"""The demo: the built-in config that ``optiscope demo`` (and ``make demo``) runs.

It is an ordinary config run by the same pipeline as ``optiscope train``:
``optiscope demo --print-config > my.toml`` gives a starting point for your own runs.
"""

from __future__ import annotations

import dataclasses

from optiscope.run.config import Config, parse_config

__all__ = ["DEMO_CONFIG", "demo_config"]

#: The demo: digits MLP, AdamW, linear warmup + cosine decay, norm clipping, gradient
#: accumulation over two micro-batches (which the noise scale reads), the training-dynamics
#: instruments, every figure.
DEMO_CONFIG = """\
[run]
name = "demo"
seed = 0
out_dir = "runs"
threads = 1

[data]
name = "digits"
batch_size = 32
val_fraction = 0.2

[model]
name = "mlp"
hidden = [256, 128]
dropout = 0.1

[optimizer]
name = "adamw"
lr = 3e-3
weight_decay = 0.01

[schedule]
name = "warmup_cosine"
warmup_epochs = 1
min_lr = 1e-5

[clipping]
name = "norm"
max_norm = 1.0

[train]
epochs = 15
grad_accum_steps = 2
log_interval = 10

[lr_find]
start_lr = 1e-6
end_lr = 10.0
num_iter = 100

[landscape]
num_directions = 3
line_points = 51
plane_points = 41
alpha_range = [-1.0, 1.0]
normalization = "filter"

[curvature]
top_k = 1
max_iter = 40
trace_samples = 30

[instruments]
enabled = true
quantities = ["loss", "grad_norm", "layers", "distance", "noise_scale", "sharpness",
              "preconditioned_sharpness", "hessian_trace", "grad_tests", "grad_hist",
              "grad_hist_2d", "alpha"]
every = 1
sharpness_every = 16
hist_per_layer = true
probe_batch_size = 128
"""


def demo_config(
    *,
    out_dir: str = "runs",
    name: str = "demo",
    epochs: int | None = None,
    quick: bool = False,
) -> Config:
    """The demo's config, with the command line's overrides applied.

    Args:
        out_dir: Parent of the run directory.
        name: Run name (the directory under ``out_dir``).
        epochs: Train this many epochs instead of the demo's 15.
        quick: Coarse grids and short tests, for a smoke run in seconds.

    Returns:
        The validated config.

    Raises:
        ConfigError: ``name`` or ``epochs`` is invalid.

    Example:
        >>> demo_config(epochs=3, quick=True).train.epochs
        3
    """
    overrides: dict = {"run": {"out_dir": out_dir, "name": name}}
    if epochs is not None:
        overrides["train"] = {"epochs": epochs}
    cfg = parse_config(DEMO_CONFIG, origin="demo config")
    tables = cfg.to_dict()
    for table, values in overrides.items():
        tables[table].update(values)
    if quick:
        tables["landscape"].update(num_directions=2, line_points=11, plane_points=9, max_batches=4)
        tables["lr_find"].update(num_iter=30)
        tables["curvature"].update(max_iter=10, trace_samples=5, max_batches=4)
    cfg = parse_config(tables, origin="demo config")
    return dataclasses.replace(cfg, source=DEMO_CONFIG)
