"""Instruments overhead: training time with optiscope.instruments (and with Cockpit) over without.

Two networks, as in the instruments issue:

- Cockpit's own benchmark network 3C3D (DeepOBS ``cifar10_3c3d``: conv 64-96-128 with
  max-pools, dense 512-256-10) on CIFAR-10-sized synthetic data (3x32x32, batch 64);
- the digits MLP (``digits_mlp``, 64-256-128-10 with dropout) on the bundled digits, batch 64.

Both train with SGD (momentum 0.9) on a few fixed batches cycled. Three tiers of
quantities, each at tracking intervals 1, 4 and 16 (optiscope ``every``, Cockpit
``schedules.linear``):

a. optiscope ``loss, grad_norm, layers, distance`` (per-layer grad/weight/update norms,
   update ratios); Cockpit GradNorm, Distance, UpdateSize, Loss, Parameters.
b. plus the noise scale under gradient accumulation (two micro-batches of 32, read by
   ``after_backward``); Cockpit plus NormTest, InnerTest, OrthoTest (per-sample gradients
   from BackPACK; Cockpit has no gradient accumulation, so it runs on the batch of 64).
   optiscope's baseline here is the same accumulating loop without instruments.
c. plus sharpness every 16 steps (optiscope ``sharpness``, warm-started, on a fixed probe
   batch of 64); Cockpit plus HessMaxEV every 16 steps (on the current batch).

Each measurement is a window of optimizer steps (a multiple of 16, so each holds the same
number of sharpness measurements) on a model that keeps training; the one host copy
(``Instruments.flush``) happens once per window, at its end, as a log point would. The
optiscope loops and the Cockpit loops run in two separate phases, each with its own
baseline, so that neither pays for the other's allocations and caches; within a phase,
per repeat every loop (the baselines included) runs one window, in an order rotated from
repeat to repeat, so machine noise hits all alike. The ratios are the median time per
step over the phase baseline's, and (``min`` column) the fastest window's over the
baseline's fastest: interference only ever slows a window down, so on a shared machine
the minimum is the steadier estimate of a small overhead (six identical plain digits
loops, 21 windows each, measured 0.93-1.10x apart by medians of 5 windows and within
0.7% by minima). The optiscope phase runs 21 windows of the digits MLP (about 1 ms per
step) and 5 of 3C3D; the Cockpit phase, 20-50x slower and far from the targets, runs
``--repeats`` (3). One torch thread for every loop. Also
printed: the Hessian-vector products per sharpness measurement, warm-started (the
trained loops) and from a random start (a fresh ``Instruments`` on the final weights).

Cockpit (``cockpit-for-pytorch`` + ``backpack-for-pytorch``) is a benchmark dependency; if
it does not import its columns say "n/a".

Run: ``python benchmarks/bench_instruments.py`` (about seven minutes on one core: 3C3D
at interval 1, the digits MLP at 1, 4 and 16; ``--full`` runs 3C3D at 4 and 16 too, and
five Cockpit repeats). For a quick look: ``--only digits`` (or ``3c3d``), ``--tiers a,c``,
``--intervals 1``, ``--repeats N``, ``--no-cockpit``. Each row also gives the extra
microseconds per optimizer step (CPU time, median window over the baseline's).
"""

from __future__ import annotations

import gc
import itertools
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optiscope.data import digits_tensors
from optiscope.instruments import Instruments
from optiscope.models import digits_mlp

TIERS = ("a", "b", "c")
CHEAP = ("loss", "grad_norm", "layers", "distance")
ACCUM = 2
BATCH = 64


def c3d() -> nn.Module:
    """DeepOBS's 3C3D for CIFAR-10 (valid 5x5 and 3x3 convs, a same 3x3, 3x3/2 max-pools)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 5), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(64, 96, 3), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(96, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Flatten(),
        nn.Linear(3 * 3 * 128, 512), nn.ReLU(),
        nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip


@dataclass
class Network:
    name: str
    build: Callable[[], nn.Module]
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    window: int  # optimizer steps per timed window (a multiple of 16)
    repeats: int  # timed windows per optiscope loop
    intervals: tuple[int, ...]


def _networks(full: bool) -> list[Network]:
    g = torch.Generator().manual_seed(0)
    cifar = [
        (torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
        for _ in range(4)
    ]
    x, y = digits_tensors()
    digits = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, 8 * BATCH, BATCH)]
    return [
        Network("3C3D", c3d, cifar, 16, 5, (1, 4, 16) if full else (1,)),
        Network("digits MLP", digits_mlp, digits, 32, 21, (1, 4, 16)),
    ]


# --- the loops ---------------------------------------------------------------------------
@dataclass
class Loop:
    """One model + optimizer training on, with what (if anything) watches it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: Any
    accum: int = 1
    inst: Any = None
    cockpit: Any = None
    loss_fn: Any = None
    step: int = 0
    window_steps: int = 1  # steps per timed window (set by the phase)
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def window(self, steps: int) -> None:
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            x, y = next(self.batches)
            if self.cockpit is not None:
                self._cockpit_step(x, y)
            else:
                self._step(x, y)
            self.step += 1
        if self.inst is not None:
            self.inst.flush()  # the log point: the window's one host copy
        self.times.append(time.perf_counter() - w0)
        self.cpu.append(time.process_time() - c0)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for xm, ym in zip(x.chunk(self.accum), y.chunk(self.accum)):
            loss = F.cross_entropy(self.model(xm), ym)
            (loss / self.accum if self.accum > 1 else loss).backward()
            if self.inst is not None:
                self.inst.after_backward(loss, batch_size=len(xm))
        if self.inst is not None:
            self.inst.before_step()
        self.optimizer.step()
        if self.inst is not None:
            self.inst.after_step()
        self.optimizer.zero_grad(set_to_none=True)

    def _cockpit_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        out = self.model(x)
        loss = self.loss_fn(out, y)
        info = {
            "batch_size": x.shape[0],
            "individual_losses": F.cross_entropy(out, y, reduction="none"),
            "loss": loss,
            "optimizer": self.optimizer,
        }
        with self.cockpit(self.step, info=info):
            loss.backward(create_graph=self.cockpit.create_graph(self.step))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _fresh(net: Network, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = net.build()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def _optiscope_loop(net: Network, tier: str, every: int) -> Loop:
    model, opt = _fresh(net)
    quantities = (
        CHEAP + (("noise_scale",) if tier != "a" else ()) + (("sharpness",) if tier == "c" else ())
    )
    kwargs: dict[str, Any] = {"quantities": quantities, "every": every, "sharpness_every": 16}
    if tier != "a":
        kwargs["noise_source"] = "micro_batches"
    if tier == "c":
        kwargs["probe_batch"] = net.batches[0]
        kwargs["loss_fn"] = F.cross_entropy
    inst = Instruments(model, opt, **kwargs)
    return Loop(model, opt, itertools.cycle(net.batches), ACCUM if tier != "a" else 1, inst)


def _cockpit_loop(net: Network, tier: str, every: int, parameters: bool = True) -> Loop | None:
    try:
        from backpack import extend
        from cockpit import Cockpit, quantities
        from cockpit.utils import schedules
    except ImportError:
        return None
    model, opt = _fresh(net)
    model = extend(model)
    s = schedules.linear(every)
    q = [quantities.GradNorm(s), quantities.Distance(s), quantities.UpdateSize(s),
         quantities.Loss(s)]  # fmt: skip
    if parameters:
        # Parameters keeps every weight as a Python list at each tracked step.
        q.append(quantities.Parameters(s))
    if tier != "a":
        q += [quantities.NormTest(s), quantities.InnerTest(s), quantities.OrthoTest(s)]
    if tier == "c":
        q.append(quantities.HessMaxEV(schedules.linear(16)))
    ck = Cockpit(model.parameters(), quantities=q)
    loss_fn = extend(nn.CrossEntropyLoss())
    return Loop(model, opt, itertools.cycle(net.batches), 1, None, ck, loss_fn)


# --- measuring -------------------------------------------------------------------------
def _per_step(loop: Loop, attr: str) -> float:
    return statistics.median(getattr(loop, attr)) / loop.window_steps


def _median_ratio(loop: Loop | None, base: Loop, attr: str) -> float | None:
    return None if loop is None else _per_step(loop, attr) / _per_step(base, attr)


def _fmt(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def _phase(loops: list[tuple[str, Loop]], steps: int, repeats: int) -> None:
    """Warm every loop up, then time ``repeats`` rotated rounds of one window each."""
    # Warm-up: first calls and the allocator; tier c runs 16 steps so that its first
    # (cold) sharpness measurement is behind it and the timed ones are warm-started.
    for tier, loop in loops:
        loop.window(16 if tier == "c" else 2)
        loop.times.clear()
        loop.cpu.clear()
        loop.window_steps = steps
    order = [loop for _, loop in loops]
    for r in range(repeats):
        k = r % len(order)
        for loop in order[k:] + order[:k]:
            loop.window(steps)


def bench_network(
    net: Network, repeats: int, tiers: tuple[str, ...] = TIERS, cockpit: bool = True
) -> list[tuple]:
    base = Loop(*_fresh(net), itertools.cycle(net.batches))
    base_acc = Loop(*_fresh(net), itertools.cycle(net.batches), ACCUM)
    base_ck = Loop(*_fresh(net), itertools.cycle(net.batches))
    mine: dict[tuple[str, int], Loop] = {}
    theirs: dict[tuple[str, int, bool], Loop | None] = {}
    for tier in tiers:
        for k in net.intervals:
            mine[(tier, k)] = _optiscope_loop(net, tier, k)
            for parameters in (True, False) if tier == "a" else (True,):
                theirs[(tier, k, parameters)] = (
                    _cockpit_loop(net, tier, k, parameters) if cockpit else None
                )
    _phase([("a", base), ("b", base_acc)] + [(t, lp) for (t, _), lp in mine.items()],
           net.window, max(net.repeats, repeats))  # fmt: skip
    ck = [(t, lp) for (t, _, _), lp in theirs.items() if lp is not None]
    if ck:
        _phase([("a", base_ck), *ck], net.window, repeats)
    rows = []
    for (tier, k), loop in mine.items():
        ref = base_acc if tier != "a" else base
        ck_loop, np_loop = theirs[(tier, k, True)], theirs.get((tier, k, False))
        rows.append((
            tier, k,
            _median_ratio(loop, ref, "times"), _median_ratio(loop, ref, "cpu"),
            min(loop.cpu) / min(ref.cpu),
            _median_ratio(ck_loop, base_ck, "times"), _median_ratio(ck_loop, base_ck, "cpu"),
            _median_ratio(np_loop, base_ck, "cpu"),
            (_per_step(loop, "cpu") - _per_step(ref, "cpu")) * 1e6,
        ))  # fmt: skip
    _hvp_line(net, [lp for (t, _), lp in mine.items() if t == "c"])
    print(
        f"  baseline: {_per_step(base, 'times') * 1e3:.1f} ms/step plain, "
        f"{_per_step(base_acc, 'times') * 1e3:.1f} ms/step with {ACCUM} micro-batches"
    )
    return rows


def _hvp_line(net: Network, loops: list[Loop | None]) -> None:
    counts = [c for loop in loops if loop is not None for c in loop.inst.hvp_counts]
    cold = _cold_hvps(net, loops[0]) if loops and loops[0] is not None else None
    if counts:
        print(
            f"  HVPs per sharpness measurement: warm-started median {statistics.median(counts):g}"
            f" (first, cold: {counts[0]}, over {len(counts)} measurements)"
            + (f"; from a random start at the final weights: {cold}" if cold else "")
        )


def _cold_hvps(net: Network, loop: Loop) -> int | None:
    # A fresh Instruments on the trained weights: its first measurement starts cold.
    # The weights are copied, so the timed loops are not touched.
    import copy

    model = copy.deepcopy(loop.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inst = Instruments(
        model, opt, quantities=("sharpness",), sharpness_every=1,
        probe_batch=net.batches[0], loss_fn=F.cross_entropy,
    )  # fmt: skip
    x, y = net.batches[0]
    F.cross_entropy(model(x), y).backward()
    inst.after_backward(None, batch_size=len(x))
    opt.step()
    inst.after_step()
    return inst.hvp_counts[0] if inst.hvp_counts else None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    full = "--full" in argv

    def option(name: str) -> str | None:
        return argv[argv.index(name) + 1] if name in argv else None

    only, tiers_arg, intervals = option("--only"), option("--tiers"), option("--intervals")
    tiers = tuple(tiers_arg.split(",")) if tiers_arg else TIERS
    cockpit = "--no-cockpit" not in argv
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)  # create_graph / hook notices
    repeats = int(option("--repeats") or (5 if full else 3))
    print(
        f"training time with instruments / without (medians of {repeats} interleaved windows; "
        "wall and CPU time, one torch thread)"
    )
    header = (
        f"{'network':<12}{'tier':>5}{'every':>6}{'optiscope wall':>16}{'cpu':>7}{'cpu min':>9}"
        f"{'cockpit wall':>14}{'cpu':>7}{'cockpit w/o Parameters cpu':>28}{'us/step':>9}"
    )
    for net in _networks(full):
        if only and only.lower().replace(" ", "") not in net.name.lower().replace(" ", ""):
            continue
        if intervals:
            net.intervals = tuple(int(k) for k in intervals.split(","))
        print(f"\n{net.name}: {net.window} steps per window")
        rows = bench_network(net, repeats, tiers, cockpit)
        print(header)
        for tier, k, ow, oc, om, cw, cc, npc, us in rows:
            print(
                f"{net.name:<12}{tier:>5}{k:>6}{_fmt(ow):>16}{_fmt(oc):>7}{_fmt(om):>9}"
                f"{_fmt(cw):>14}{_fmt(cc):>7}{_fmt(npc) if tier == 'a' else '':>28}{us:>+9.0f}"
            )
    print(
        "\ntiers: a = loss, grad norm, per-layer norms and update ratios, distance "
        "(Cockpit: GradNorm, Distance, UpdateSize, Loss, Parameters, and without Parameters, "
        "which copies every weight to a Python list); b = a + noise scale "
        "from 2 micro-batches (Cockpit: + NormTest, InnerTest, OrthoTest on the batch); "
        "c = b + sharpness every 16 steps (Cockpit: + HessMaxEV every 16)."
    )
    print("targets (issue): optiscope a <= 1.05x, b <= 1.10x, c <= 1.3x at interval 1")


if __name__ == "__main__":
    main()
