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

import itertools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_histograms import STEPS, _batches, _row, _timed  # noqa: E402
from bench_instruments import BATCH, c3d  # noqa: E402

from optiscope.instruments import Instruments  # noqa: E402
from optiscope.models import digits_mlp  # noqa: E402

OPTIMIZERS = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.01),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


def _ours(build: Callable[[], nn.Module], batches, opt_name: str, inst: bool):
    torch.manual_seed(0)
    model = build().eval()  # eval: dropout off, as the probe measures
    opt = OPTIMIZERS[opt_name](model.parameters())
    it = itertools.cycle(batches)
    watch = None
    if inst:
        watch = Instruments(model, opt, ("alpha",), grad_tests_every=1, probe_batch=batches[0],
                            loss_fn=F.cross_entropy)  # fmt: skip

    def window() -> None:
        for _ in range(STEPS):
            x, y = next(it)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if watch is not None:
                watch.after_backward(loss, batch_size=len(x))
                watch.before_step()
            opt.step()
            if watch is not None:
                watch.after_step()
            opt.zero_grad(set_to_none=True)
        if watch is not None:
            watch.flush()

    return window


def _cockpit(build: Callable[[], nn.Module], batches, opt_name: str):
    try:
        from backpack import extend
        from cockpit import Cockpit
        from cockpit.quantities import Alpha
        from cockpit.utils.schedules import linear
    except ImportError:
        return None
    torch.manual_seed(0)
    model = extend(build().eval())
    opt = OPTIMIZERS[opt_name](model.parameters())
    loss_fn = extend(nn.CrossEntropyLoss())
    cp = Cockpit(model.parameters(), quantities=[Alpha(linear(1))])
    it, step = itertools.cycle(batches), itertools.count()

    def window() -> None:
        for _ in range(STEPS):
            x, y = next(it)
            s = next(step)
            out = model(x)
            loss = loss_fn(out, y)
            info = {"batch_size": len(x), "loss": loss, "optimizer": opt,
                    "individual_losses": F.cross_entropy(out, y, reduction="none")}  # fmt: skip
            with cp(s, info=info):
                loss.backward(create_graph=cp.create_graph(s))
            opt.step()
            opt.zero_grad(set_to_none=True)

    return window


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    repeats = int(args[args.index("--repeats") + 1]) if "--repeats" in args else 5
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(f"per alpha measurement (every step), batch {BATCH}, 1 thread; median of {repeats}")
    print(f"{'network':<11} {'what':<24} {'optiscope':>10} {'Cockpit':>10} {'ratio':>8}")
    for name, build in (("3C3D", c3d), ("digits MLP", digits_mlp)):
        batches = _batches(name)
        for opt_name in OPTIMIZERS:
            t = _timed({"plain": _ours(build, batches, opt_name, False),
                        "ours": _ours(build, batches, opt_name, True),
                        "cockpit": _cockpit(build, batches, opt_name)}, repeats)  # fmt: skip
            ours = (t["ours"] - t["plain"]) / STEPS * 1e3
            theirs = (t["cockpit"] - t["plain"]) / STEPS * 1e3 if "cockpit" in t else None
            _row(name, f"{opt_name}: extra ms / step", ours, theirs)


if __name__ == "__main__":
    main()
