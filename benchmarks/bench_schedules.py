"""Schedule benchmarks: optiscope's closed-form schedules against torch's schedulers and the
guide's classes, measured side by side in one run (interleaved blocks, medians).

- per-step cost of ``ScheduleLR`` vs the torch scheduler it mirrors
  (``CosineAnnealingWarmRestarts``, ``OneCycleLR``, ``CosineAnnealingLR``), and that cost
  relative to one AdamW step of the digits MLP (the overhead a training loop pays);
- previewing 10,000 steps: ``Schedule.values`` vs the guide's ``[s.get_lr(e) for e ...]``;
- timm's ``CosineLRScheduler`` when timm is installed ("not available" otherwise).

Run: ``python benchmarks/bench_schedules.py``.
"""

from __future__ import annotations

import importlib
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch.optim import lr_scheduler as tls

from optiscope import (
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    OneCycle,
    ScheduleLR,
    WarmupCosineSchedule,
    digits_mlp,
)


class GuideWarmRestarts:
    """The guide's CosineAnnealingWarmRestarts (a while loop over cycles)."""

    def __init__(self, initial_lr=0.1, min_lr=0.0, T_0=10, T_mult=2):
        self.initial_lr, self.min_lr, self.T_0, self.T_mult = initial_lr, min_lr, T_0, T_mult

    def get_lr(self, epoch):
        T_cur, T_i = epoch, self.T_0
        while T_cur >= T_i:
            T_cur -= T_i
            T_i *= self.T_mult
        return self.min_lr + (self.initial_lr - self.min_lr) * (1 + np.cos(np.pi * T_cur / T_i)) / 2


class GuideWarmupCosine:
    """The guide's WarmupCosineSchedule."""

    def __init__(self, warmup_steps=1000, total_steps=10000, max_lr=0.001, min_lr=0.0):
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.max_lr, self.min_lr = max_lr, min_lr

    def get_lr(self, step):
        if step < self.warmup_steps:
            return self.max_lr * (step / self.warmup_steps)
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.max_lr - self.min_lr) * 0.5 * (1.0 + np.cos(np.pi * progress))


def compare(contenders: dict[str, Callable[[], object]], *, blocks: int = 15) -> dict[str, float]:
    """Median seconds per call, timed in interleaved blocks with a rotating order."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for fn in contenders.values():
        fn()  # warm up
    for b in range(blocks):
        order = names[b % len(names) :] + names[: b % len(names)]
        for n in order:
            start = time.perf_counter()
            contenders[n]()
            times[n].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def _optimizer() -> torch.optim.Optimizer:
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()  # the scheduler's "step before optimizer.step" check is then satisfied
    return opt


def _stepper(sched, steps: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(steps):
            sched.step()

    return run


def bench_step_cost(steps: int = 500) -> None:
    huge = 10**9  # OneCycleLR refuses to step past total_steps
    pairs = {
        "warm restarts (T_0=10, T_mult=2)": (
            lambda o: tls.CosineAnnealingWarmRestarts(o, 10, 2, 1e-4),
            lambda o: ScheduleLR(o, CosineAnnealingWarmRestarts(0.1, 1e-4, 10, 2)),
        ),
        "one cycle": (
            lambda o: tls.OneCycleLR(o, 0.1, total_steps=huge),
            lambda o: ScheduleLR(o, OneCycle(0.1, huge)),
        ),
        "cosine annealing": (
            lambda o: tls.CosineAnnealingLR(o, huge, 1e-4),
            lambda o: ScheduleLR(o, CosineAnnealingScheduler(0.1, 1e-4, huge)),
        ),
    }
    # One AdamW step of the digits MLP on a 64-sample batch: what the overhead compares to.
    torch.manual_seed(0)
    model = digits_mlp()
    adam = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))

    def train_steps() -> None:
        for _ in range(20):
            adam.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            adam.step()

    step_time = compare({"train": train_steps}, blocks=7)["train"] / 20
    print(f"one AdamW training step of digits_mlp (batch 64): {step_time * 1e6:9.1f} us")
    print(f"{'scheduler.step()':34s} {'torch us':>9s} {'ours us':>9s} {'ours/torch':>10s} "
          f"{'ours/train step':>15s}")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (make_torch, make_ours) in pairs.items():
            res = compare(
                {
                    "torch": _stepper(make_torch(_optimizer()), steps),
                    "ours": _stepper(make_ours(_optimizer()), steps),
                }
            )
            t, o = res["torch"] / steps, res["ours"] / steps
            print(f"{name:34s} {t * 1e6:9.2f} {o * 1e6:9.2f} {o / t:10.2f} {o / step_time:15.4f}")


def bench_preview(n: int = 10_000) -> None:
    print(f"\npreview of {n} steps{'':15s} {'guide ms':>9s} {'ours ms':>9s} {'ours/guide':>10s}")
    cases = {
        "warm restarts (T_0=10, T_mult=2)": (
            GuideWarmRestarts(0.1, 0.001, 10, 2),
            CosineAnnealingWarmRestarts(0.1, 0.001, 10, 2),
        ),
        "warmup + cosine": (GuideWarmupCosine(1000, n), WarmupCosineSchedule(1000, n)),
    }
    for name, (guide, ours) in cases.items():
        res = compare(
            {
                "guide": lambda g=guide: [g.get_lr(e) for e in range(n)],
                "ours": lambda s=ours: s.values(n),
            },
            blocks=5,
        )
        g, o = res["guide"], res["ours"]
        print(f"{name:34s} {g * 1e3:9.2f} {o * 1e3:9.2f} {o / g:10.2f}")
    # T_mult=1 is where the guide's loop costs O(t) per call: one late step.
    late = 2_000_000
    g, o = GuideWarmRestarts(0.1, 0.001, 1, 1), CosineAnnealingWarmRestarts(0.1, 0.001, 1, 1)
    res = compare({"guide": lambda: g.get_lr(late), "ours": lambda: o.get_lr(late)}, blocks=5)
    print(f"{'one call at step 2e6, T_mult=1':34s} {res['guide'] * 1e3:9.2f} "
          f"{res['ours'] * 1e3:9.4f} {res['ours'] / res['guide']:10.5f}")  # fmt: skip


def bench_timm(steps: int = 500) -> None:
    try:
        timm_scheduler = importlib.import_module("timm.scheduler")
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        print(f"\ntimm CosineLRScheduler: not available ({type(e).__name__})")
        return
    opt = _optimizer()
    timm_sched = timm_scheduler.CosineLRScheduler(opt, t_initial=10, cycle_mul=2, lr_min=1e-4)
    ours = ScheduleLR(_optimizer(), CosineAnnealingWarmRestarts(0.1, 1e-4, 10, 2))
    state = {"t": 0}

    def timm_run() -> None:
        for _ in range(steps):
            state["t"] += 1
            timm_sched.step_update(state["t"])

    res = compare({"timm": timm_run, "ours": _stepper(ours, steps)})
    t, o = res["timm"] / steps, res["ours"] / steps
    print(f"\ntimm CosineLRScheduler step: {t * 1e6:.2f} us, ours {o * 1e6:.2f} us, "
          f"ratio {o / t:.2f}")  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    bench_step_cost()
    bench_preview()
    bench_timm()


if __name__ == "__main__":
    main()
