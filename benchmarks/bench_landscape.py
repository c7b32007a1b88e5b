"""Loss-landscape grids: the guide's loop vs optiscope vs the ``loss-landscapes`` package.

Three cases from issue 4, each measured side by side in one run:

1. the guide's 2-10-1 network, 100 samples, 51x51 grid;
2. a 64-256-128-10 MLP on all 1,797 digits, 31x31 grid;
3. a small CNN with BatchNorm on all 1,797 digits (8x8 images).

Times are medians of a few alternating rounds (and the best round beside them); ratios
are what matter (machines are noisy).
"Achieved GFLOP/s" is (grid points x FLOPs of one full forward) / time: the work the
naive method does. optiscope's first-layer algebra skips part of that work, so its
figure is an effective rate and may exceed the measured matmul peak.
``loss-landscapes`` is a bench extra only; when it is missing it is reported as
"not available". Run: ``python benchmarks/bench_landscape.py``.

``python benchmarks/bench_landscape.py --rule`` prints the measurements behind the fixed
rule ``method="auto"`` applies (``landscape/_choice.py``): for plain Sequentials at several
batch sizes, the FLOPs per layer call the rule reads, its pick, and the vmap and walk
times per grid point side by side; and the walk with and without first-layer algebra
against the first layer's fan-in.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from optiscope import landscape
from optiscope.data import digits_tensors
from optiscope.models import digits_cnn, digits_mlp


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Median GFLOP/s of an ``n x n`` float32 matmul on this machine (the reference peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = _median_time(lambda: a @ b, repeats)
    return 2 * n**3 / t / 1e9


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward, counted by torch's own FlopCounterMode (matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def guide_loop(model, loss_fn, X, y, d1, d2, alphas) -> np.ndarray:
    """The guide's Part 3 loop: reassign ``param.data``, forward, ``.item()`` per point."""
    params = list(model.named_parameters())
    original = [p.data.clone() for _, p in params]
    losses = np.zeros((len(alphas), len(alphas)))
    for i, a in enumerate(alphas):
        for j, b in enumerate(alphas):
            for (name, p), orig in zip(params, original):
                p.data = orig + a * d1[name] + b * d2[name]
            with torch.no_grad():
                losses[i, j] = loss_fn(model(X), y).item()
    for (_, p), orig in zip(params, original):
        p.data = orig
    return losses


def loss_landscapes_plane(model, loss_fn, X, y, steps: int, normalization: str = "filter"):
    """``loss_landscapes.random_plane`` as its README uses it, or None if not installed.

    It leaves the model's weights at the last grid point (it does not restore them), so
    it gets its own copy: otherwise the weights drift further with every repeat.
    """
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except Exception:  # noqa: BLE001 - any failure to import means "not available"
        return None
    model = copy.deepcopy(model)
    metric = loss_landscapes.metrics.Loss(loss_fn, X, y)
    return lambda: loss_landscapes.random_plane(
        model, metric, distance=1, steps=steps, normalization=normalization, deepcopy_model=False
    )


def run_case(name, model, loss_fn, X, y, steps, *, guide_steps=None, rounds=3) -> dict[str, float]:
    """Time the three methods on one case; print medians, ratios and GFLOP/s.

    optiscope and loss-landscapes run in alternating rounds, so both see the same
    machine load; the guide's loop runs once (on a smaller grid where said, scaled).
    """
    model.eval()
    d1, d2 = landscape.random_directions(model, 2, seed=0)
    flops = forward_flops(model, X)
    points = steps * steps
    last = {}

    def ours():
        last["ls"] = landscape.plane(
            model, loss_fn, X, y, d1=d1, d2=d2, num_points=steps, progress=False
        )

    # Warm-up on a small grid: vmap's first trace, the allocator.
    landscape.plane(model, loss_fn, X, y, d1=d1, d2=d2, num_points=4, progress=False)
    ll_note = ""
    ll = loss_landscapes_plane(model, loss_fn, X, y, steps)
    if ll is not None:
        try:
            loss_landscapes_plane(model, loss_fn, X, y, 3)()  # warm-up, and does it work?
        except ZeroDivisionError:
            # Its filter normalisation divides by zero on one-element filters (BatchNorm
            # parameters); time it with its layer normalisation instead (same work).
            ll_note = " [layer norm.]"
            ll = loss_landscapes_plane(model, loss_fn, X, y, steps, "layer")
    times: dict[str, list[float]] = {"ours": [], "ll": []}
    for _ in range(rounds):
        times["ours"].append(_median_time(ours, 1))
        if ll is not None:
            times["ll"].append(_median_time(ll, 1))
    t_ours = statistics.median(times["ours"])
    t_ll = statistics.median(times["ll"]) if times["ll"] else None
    best = {k: min(v) for k, v in times.items() if v}
    meta = last["ls"].metadata

    gs = guide_steps or steps
    alphas = np.linspace(-1, 1, gs)
    t_guide = _median_time(lambda: guide_loop(model, loss_fn, X, y, d1, d2, alphas), 1)
    t_guide_scaled = t_guide * points / (gs * gs)

    print(
        f"\n== {name}: {points} points ({steps}x{steps}), {X.shape[0]} samples, "
        f"{flops / 1e6:.2f} MFLOP per forward, median of {rounds} =="
    )
    print(
        f"{'method':<38}{'median s':>10}{'GFLOP/s':>10}{'optiscope speed-up':>20}"
        f"{'best s':>9}{'best ratio':>12}"
    )

    def row(label, t, key=None):
        gf = points * flops / t / 1e9
        extra = ""
        if key in best:
            extra = f"{best[key]:>9.3f}{best[key] / best['ours']:>11.1f}x"
        print(f"{label:<38}{t:>10.3f}{gf:>10.2f}{t / t_ours:>19.1f}x{extra}")

    fl = ", first-layer algebra" if meta["first_layer"] else ""
    row(f"optiscope ({meta['method']}{fl})", t_ours, "ours")
    row("guide loop" + ("" if gs == steps else f" [{gs}x{gs} once, scaled]"), t_guide_scaled)
    if t_ll is None:
        print(f"{'loss-landscapes':<38}{'not available':>10}")
    else:
        row("loss-landscapes" + ll_note, t_ll, "ll")
    return {"optiscope": t_ours, "guide": t_guide_scaled, "loss-landscapes": t_ll or float("nan")}


def main(threads: int = 1) -> None:
    """Run the three cases (about a minute on an idle CPU core).

    Args:
        threads: torch intra-op threads for every method and the matmul peak alike. One by
            default: on a shared machine, multi-threaded kernels stall at their barriers
            whenever a thread is descheduled, which makes the ratios noise.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _main()
    finally:
        torch.set_num_threads(before)


def _main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    peak = matmul_peak_gflops()
    print(f"measured matmul peak (1024x1024 float32): {peak:.1f} GFLOP/s")

    # 1. The guide's example network and data (its loop timed on 26x26 and scaled).
    model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
    X = torch.randn(100, 2)
    y = (X[:, 0] + X[:, 1] > 0).float().unsqueeze(1)
    run_case("guide 2-10-1", model, nn.BCEWithLogitsLoss(), X, y, 51, guide_steps=26, rounds=5)

    # 2. 64-256-128-10 MLP on all digits (the guide's loop on 11x11, scaled).
    X, y = digits_tensors()
    run_case(
        "MLP 64-256-128-10",
        digits_mlp(),
        nn.CrossEntropyLoss(),
        X,
        y,
        31,
        guide_steps=11,
        rounds=2,
    )

    # 3. Small CNN with BatchNorm on all digits (the guide's loop on 9x9, scaled).
    run_case(
        "CNN with BatchNorm",
        digits_cnn(8),
        nn.CrossEntropyLoss(),
        X.view(-1, 1, 8, 8),
        y,
        21,
        guide_steps=9,
        rounds=2,
    )
    print(f"\n(matmul peak for reference: {peak:.1f} GFLOP/s)")


def _per_point(model, loss_fn, X, y, n, rounds=3, **kw) -> float:
    """Best-of-rounds milliseconds per grid point of an ``n x n`` plane."""
    d1, d2 = landscape.random_directions(model, 2, seed=0)
    landscape.plane(model, loss_fn, X, y, d1=d1, d2=d2, num_points=2, progress=False, **kw)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        landscape.plane(model, loss_fn, X, y, d1=d1, d2=d2, num_points=n, progress=False, **kw)
        best = min(best, time.perf_counter() - t0)
    return best / (n * n) * 1e3


def rule_table() -> None:
    """The sweep behind the rule: vmap vs walk, and the walk's first-layer algebra."""
    from optiscope.batch_loss import as_batch_loss
    from optiscope.landscape._choice import probe

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ce, bce = nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss()
    nets = {
        "2-10-1": (lambda: nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1)), 2, bce),
        "MLP 64-256-128-10": (digits_mlp, 64, ce),
        "CNN with BatchNorm": (lambda: digits_cnn(8), (1, 8, 8), ce),
    }
    print(f"{'model':<20}{'N':>6}{'FLOP/call':>11}{'rule':>6}{'vmap ms':>9}{'walk ms':>9}  faster")
    for name, (build, shape, lf) in nets.items():
        for n in (16, 64, 256, 1024):
            model = build().eval()
            X = torch.randn(n, *((shape,) if isinstance(shape, int) else shape))
            y = torch.rand(n, 1).round() if lf is bce else torch.randint(0, 10, (n,))
            pr = probe(model, as_batch_loss(lf), (X, y))
            d1, d2 = landscape.random_directions(model, 2, seed=0)
            pick = landscape.plane(model, lf, X, y, d1=d1, d2=d2, num_points=2,
                                   progress=False).metadata["method"]  # fmt: skip
            k = 8 if n <= 256 else 5
            tv = _per_point(model, lf, X, y, k, method="vmap")
            tw = _per_point(model, lf, X, y, k, method="walk")
            fast = "vmap" if tv < tw else "walk"
            print(f"{name:<20}{n:>6}{pr.flops / max(pr.calls, 1):>11.0f}{pick:>6}"
                  f"{tv:>9.4f}{tw:>9.4f}  {fast} {max(tv, tw) / min(tv, tw):.2f}x")  # fmt: skip
    print(f"\n{'first layer':<20}{'fan-in':>7}{'walk ms':>9}{'+algebra':>9}  ratio")
    cases = [(f"Linear({f}, 256)", f, nn.Linear(f, 256), (f,)) for f in (8, 16, 32, 64, 128)]
    cases += [(f"Conv2d({c}, 16, 3)", 9 * c, nn.Conv2d(c, 16, 3, padding=1), (c, 8, 8))
              for c in (1, 3, 8)]  # fmt: skip
    for name, fan, first, shape in cases:
        model = nn.Sequential(first, nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)).eval()
        X, y = torch.randn(1024, *shape), torch.randint(0, 10, (1024,))
        model(X)  # materialise the lazy layer
        a = _per_point(model, ce, X, y, 4, method="walk", first_layer=False)
        b = _per_point(model, ce, X, y, 4, method="walk", first_layer=True)
        print(f"{name:<20}{fan:>7}{a:>9.3f}{b:>9.3f}  {a / b:.2f}x")


if __name__ == "__main__":
    import sys

    rule_table() if "--rule" in sys.argv else main()
