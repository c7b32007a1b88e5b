"""Timed training loops for the per-measurement benchmarks of probe quantities
(``bench_histograms.py``, ``bench_alpha.py``): the plain loop, the loop with optiscope's
instruments measuring at every step, and the loop with Cockpit measuring at every step.

Each loop is a ``window()`` of :data:`STEPS` optimizer steps on a model in eval mode
(dropout off, as the probes measure) that keeps training on two batches cycled; the
instrumented one flushes once per window, as a log point would. :func:`timed` runs the
windows interleaved, in an order rotated from repeat to repeat, and returns medians of
process (CPU) time.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from bench_instruments import BATCH
from torch import nn

from optiscope.data import digits_tensors
from optiscope.instruments import Instruments

__all__ = ["STEPS", "batches_for", "cockpit_loop", "extra_ms", "loop", "row", "start", "timed"]

STEPS = 4  # steps per timed window
Optimizer = Callable[[Any], torch.optim.Optimizer]


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01)


def batches_for(name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of 64: CIFAR-10-sized synthetic images for 3C3D, digits otherwise."""
    g = torch.Generator().manual_seed(0)
    if name == "3C3D":
        return [(torch.randn(BATCH, 3, 32, 32, generator=g),
                 torch.randint(0, 10, (BATCH,), generator=g)) for _ in range(2)]  # fmt: skip
    x, y = digits_tensors()
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in (0, BATCH)]


def loop(
    build: Callable[[], nn.Module],
    batches: list,
    quantities: tuple[str, ...] | None,
    make_opt: Optimizer = _sgd,
) -> Callable[[], None]:
    """The plain loop (``quantities=None``) or one with ``Instruments`` measuring
    ``quantities`` at every step (``grad_tests_every=1``, the first batch as the probe)."""
    torch.manual_seed(0)
    model = build().eval()
    opt = make_opt(model.parameters())
    it = itertools.cycle(batches)
    watch = None
    if quantities is not None:
        watch = Instruments(model, opt, quantities, grad_tests_every=1, probe_batch=batches[0],
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


def cockpit_loop(
    build: Callable[[], nn.Module],
    batches: list,
    quantities: Callable[[Any], list],
    make_opt: Optimizer = _sgd,
) -> Callable[[], None] | None:
    """The loop with Cockpit measuring ``quantities(schedule)`` at every step; None when
    Cockpit does not import."""
    try:
        from backpack import extend
        from cockpit import Cockpit
        from cockpit.utils.schedules import linear
    except ImportError:
        return None
    torch.manual_seed(0)
    model = extend(build().eval())
    opt = make_opt(model.parameters())
    loss_fn = extend(nn.CrossEntropyLoss())
    cp = Cockpit(model.parameters(), quantities=quantities(linear(1)))
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


def timed(fns: dict[str, Callable[[], None] | None], repeats: int) -> dict[str, float]:
    """Median CPU seconds per call of each function (None entries skipped), after one
    warm-up call each, calls interleaved in a rotating order."""
    times: dict[str, list[float]] = {k: [] for k, f in fns.items() if f is not None}
    for k in times:
        fns[k]()  # warm-up
    order = list(times)
    for r in range(repeats):
        for k in order[r % len(order) :] + order[: r % len(order)]:
            t0 = time.process_time()
            fns[k]()
            times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def start(argv: list[str] | None, what: str) -> int:
    """One torch thread, warnings off, the table's header; returns ``--repeats`` (5)."""
    args = sys.argv[1:] if argv is None else argv
    repeats = int(args[args.index("--repeats") + 1]) if "--repeats" in args else 5
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(f"{what}, batch {BATCH}, 1 thread; median of {repeats}")
    print(f"{'network':<11} {'what':<24} {'optiscope':>10} {'Cockpit':>10} {'ratio':>8}")
    return repeats


def extra_ms(t: dict[str, float]) -> tuple[float, float | None]:
    """Milliseconds per step over the plain loop's: optiscope's and Cockpit's (None
    without Cockpit), from :func:`timed`'s ``plain``, ``ours`` and ``cockpit`` windows."""
    ours = (t["ours"] - t["plain"]) / STEPS * 1e3
    return ours, (t["cockpit"] - t["plain"]) / STEPS * 1e3 if "cockpit" in t else None


def row(name: str, what: str, ours: float, theirs: float | None) -> None:
    """One table row: optiscope's and Cockpit's numbers and how many times faster ours is."""
    ratio = "n/a" if theirs is None else f"{theirs / ours:.1f}x"
    cockpit = "n/a" if theirs is None else f"{theirs:.1f}"
    print(f"{name:<11} {what:<24} {ours:>10.1f} {cockpit:>10} {ratio:>8}", flush=True)
