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
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _probe_loops import STEPS, batches_for, cockpit_loop, loop, row, timed  # noqa: E402
from bench_instruments import BATCH, c3d  # noqa: E402

from optiscope.models import digits_mlp  # noqa: E402

OPTIMIZERS = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.01),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


def _cockpit_alpha(schedule) -> list:
    from cockpit.quantities import Alpha

    return [Alpha(schedule)]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    repeats = int(args[args.index("--repeats") + 1]) if "--repeats" in args else 5
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(f"per alpha measurement (every step), batch {BATCH}, 1 thread; median of {repeats}")
    print(f"{'network':<11} {'what':<24} {'optiscope':>10} {'Cockpit':>10} {'ratio':>8}")
    for name, build in (("3C3D", c3d), ("digits MLP", digits_mlp)):
        batches = batches_for(name)
        for opt_name, make_opt in OPTIMIZERS.items():
            t = timed({"plain": loop(build, batches, None, make_opt),
                       "ours": loop(build, batches, ("alpha",), make_opt),
                       "cockpit": cockpit_loop(build, batches, _cockpit_alpha, make_opt)},
                      repeats)  # fmt: skip
            ours = (t["ours"] - t["plain"]) / STEPS * 1e3
            theirs = (t["cockpit"] - t["plain"]) / STEPS * 1e3 if "cockpit" in t else None
            row(name, f"{opt_name}: extra ms / step", ours, theirs)


if __name__ == "__main__":
    main()
