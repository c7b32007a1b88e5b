"""Alpha, the effective step size: optiscope's ``alpha`` against Cockpit's ``Alpha``, per
measurement, with plain SGD (Cockpit's fast path) and with Adam.

Two networks at batch 64: Cockpit's benchmark network 3C3D (895 k parameters) on
CIFAR-10-sized synthetic data, and the digits MLP (51 k parameters). Each library measures
alpha at every step; the cost of a measurement is the time per step over the plain loop's.
optiscope: a copy of the weights before the step and two forward-mode passes of the probe
batch (``torch.func.jvp``), whatever the optimizer. Cockpit: BackPACK's per-sample
gradients inside every training backward, projected onto the step in a hook for SGD with
default arguments, and stored whole (with a copy of the parameters and gradients) for any
other optimizer. Medians over ``--repeats`` (5) rounds, loops interleaved; one thread.

Run: ``python benchmarks/bench_alpha.py`` (about two minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _probe_loops import batches_for, cockpit_loop, extra_ms, loop, row, start, timed  # noqa: E402
from bench_instruments import c3d  # noqa: E402

from optiscope.models import digits_mlp  # noqa: E402

OPTIMIZERS = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.01),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


def _cockpit_alpha(schedule) -> list:
    from cockpit.quantities import Alpha

    return [Alpha(schedule)]


def main(argv: list[str] | None = None) -> None:
    repeats = start(argv, "per alpha measurement (every step)")
    for name, build in (("3C3D", c3d), ("digits MLP", digits_mlp)):
        batches = batches_for(name)
        for opt_name, make_opt in OPTIMIZERS.items():
            t = timed({"plain": loop(build, batches, None, make_opt),
                       "ours": loop(build, batches, ("alpha",), make_opt),
                       "cockpit": cockpit_loop(build, batches, _cockpit_alpha, make_opt)},
                      repeats)  # fmt: skip
            row(name, f"{opt_name}: extra ms / step", *extra_ms(t))


if __name__ == "__main__":
    main()
