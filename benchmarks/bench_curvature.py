"""Curvature: optiscope.curvature against PyHessian, side by side, and Hutch++ vs Hutchinson.

Three tables, one run:

1. The digits MLP against PyHessian (below).
2. A zoo-style ResNet (basic blocks, BatchNorm, in-place ReLU) on 128 CIFAR-sized
   3x32x32 images: seconds per Hessian-vector product, PyHessian's retained
   ``create_graph`` graph against optiscope's cached ``torch.func`` pullback, single
   products (Lanczos) and blocks of 10 (trace probes), and a 30-probe Hutchinson trace.
3. Hessian-vector products Hutchinson needs for the standard error that Hutch++ and the
   Krylov-sketched Hutch++ reach with a given budget (``var(v^T H v) / stderr^2``, a
   load-free count), on the digits MLP (briefly and longer trained) and the zoo ResNet.

Same model (``digits_mlp``, 50,826 parameters, trained briefly), same data (all 1,797
digits in one batch, then a DataLoader of 512), same budgets. Printed: medians of the
wall time, the ratio PyHessian / optiscope (> 1: optiscope is faster), and the values, so
"same top eigenvalue within 1%" is checked in the same run. PyHessian is a benchmark
dependency only (``pip install pyhessian``); if it does not import it is reported as not
available. Its density calls ``torch.eig``, removed from torch, so a shim built on
``torch.linalg.eigh`` is installed for the density row only.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from optiscope import curvature
from optiscope.data import digits_tensors
from optiscope.models import digits_mlp

REPEATS = 3
# The zoo's architectures live with the tests; make them importable from here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _median_time(fn: Callable[[], Any], repeats: int = REPEATS) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        # PyHessian's backward(create_graph=True) leaves parameter <-> grad reference
        # cycles; collect them here so the cyclic GC does not run inside the next timing.
        gc.collect()
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _compare(
    ref: Callable[[], Any] | None, ours: Callable[[], Any], repeats: int = REPEATS
) -> tuple[float | None, Any, float, Any]:
    """Alternate the two so that load on a shared machine hits both alike; medians."""
    t_ref, t_ours, out_ref, out_ours = [], [], None, None
    for _ in range(repeats):
        if ref is not None:
            dt, out_ref = _median_time(ref, 1)
            t_ref.append(dt)
        dt, out_ours = _median_time(ours, 1)
        t_ours.append(dt)
    med_ref = statistics.median(t_ref) if t_ref else None
    return med_ref, out_ref, statistics.median(t_ours), out_ours


class _HVPCounter:
    """Counts PyHessian's Hessian-vector products (load-independent work measure)."""

    def __init__(self) -> None:
        self.n = 0
        self.module = sys.modules.get("pyhessian.hessian")
        if self.module is None:
            return
        original = self.module.hessian_vector_product
        loader = self.module.hessian.dataloader_hv_product

        def counted(*a: Any, **k: Any) -> Any:
            self.n += 1
            return original(*a, **k)

        def counted_loader(*a: Any, **k: Any) -> Any:
            self.n += 1
            return loader(*a, **k)

        self.module.hessian_vector_product = counted
        self.module.hessian.dataloader_hv_product = counted_loader

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def _trained_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    X, y = digits_tensors()
    model = digits_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):  # a few full-batch steps: away from the initialisation
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), X, y


def _pyhessian() -> Any | None:
    try:
        from pyhessian import hessian
    except Exception as e:  # an old package: any import failure means "not available"
        print(f"PyHessian: not available ({type(e).__name__}: {e})")
        return None
    return hessian


def _eig_shim(T: torch.Tensor, eigenvectors: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    # torch.eig returned (n, 2) [real, imag] eigenvalues; T is symmetric here.
    w, V = torch.linalg.eigh(T)
    return torch.stack([w, torch.zeros_like(w)], dim=1), V


def _fresh(hessian: Any, model: torch.nn.Module, **kw: Any) -> Any:
    torch.manual_seed(0)  # PyHessian draws its vectors from the global RNG
    model.zero_grad(set_to_none=True)  # no stale double-backward graphs from the last run
    return hessian(model, F.cross_entropy, cuda=False, **kw)


def digits_table() -> None:
    """The digits MLP against PyHessian: eigenvalues, trace, density, a DataLoader."""
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    model, X, y = _trained_model()
    loss_fn = F.cross_entropy
    loader = DataLoader(TensorDataset(X, y), batch_size=512)
    n = sum(p.numel() for p in model.parameters())
    hessian = _pyhessian()
    count = _HVPCounter()
    print(f"digits MLP: {n} parameters, {len(y)} samples, torch {torch.__version__}")
    print(
        f"{'task':<28} {'PyHess s':>8} {'optisc s':>8} {'ratio':>7}   "
        f"{'PyHessian value (HVPs)':<34} optiscope value (HVPs)"
    )

    def row(name: str, t_ref: float | None, t_ours: float, ref: str, ours: str) -> None:
        ratio = f"{t_ref / t_ours:6.2f}x" if t_ref is not None else "    n/a"
        ref_t = f"{t_ref:8.3f}" if t_ref is not None else "     n/a"
        print(f"{name:<28} {ref_t} {t_ours:8.3f} {ratio}   {ref:<34} {ours}", flush=True)

    # Warm both up (lazy initialisation, allocator) outside the timed runs.
    curvature.hessian_eigenvalues(model, loss_fn, X, y, max_iter=2, seed=0)
    if hessian is not None:
        _fresh(hessian, model, data=(X, y)).eigenvalues(maxIter=2)
        count.take()

    # --- top eigenvalue, one batch -----------------------------------------------------
    ref = None
    if hessian is not None:
        ref = lambda: _fresh(hessian, model, data=(X, y)).eigenvalues(maxIter=100, tol=1e-3)  # noqa: E731
    t_ref, out, t_ours, r = _compare(
        ref, lambda: curvature.hessian_eigenvalues(model, loss_fn, X, y, top_k=1, seed=0)
    )
    ref_val = "not available"
    if out is not None:
        lam, rel = out[0][0], abs(out[0][0] - r.top) / abs(r.top)
        ok = "OK" if rel < 1e-2 else "MISMATCH"
        ref_val = f"{lam:.5f} ({count.take() // REPEATS}), diff {rel:.1e} {ok}"
    row("top eigenvalue, 1 batch", t_ref, t_ours, ref_val, f"{r.top:.5f} ({r.iterations})")

    # --- top-5 eigenvalues ---------------------------------------------------------------
    ref = None
    if hessian is not None:
        ref = lambda: _fresh(hessian, model, data=(X, y)).eigenvalues(top_n=5)  # noqa: E731
    t_ref, out, t_ours, r5 = _compare(
        ref, lambda: curvature.hessian_eigenvalues(model, loss_fn, X, y, top_k=5, seed=0), 1
    )
    ref_val = "not available"
    if out is not None:
        ref_val = " ".join(f"{v:.3f}" for v in out[0]) + f" ({count.take()})"
    ours_val = " ".join(f"{v:.3f}" for v in r5.eigenvalues.tolist()) + f" ({r5.iterations})"
    row("top-5 eigenvalues, 1 batch", t_ref, t_ours, ref_val, ours_val)

    # --- trace -------------------------------------------------------------------------
    probes = 30
    ref = None
    if hessian is not None:
        ref = lambda: _fresh(hessian, model, data=(X, y)).trace(maxIter=probes, tol=0.0)  # noqa: E731
    t_ref, out, t_ours, tr = _compare(
        ref,
        lambda: curvature.hessian_trace(
            model, loss_fn, X, y, max_iter=probes, seed=0, method="hutchinson"
        ),
    )
    ref_val = "not available"
    if out is not None:
        s = torch.tensor(out, dtype=torch.float64)
        ref_val = f"{float(s.mean()):.3f} +- {float(s.std()) / len(s) ** 0.5:.3f}"
        count.take()
    ours_val = f"{tr.trace:.3f} +- {tr.stderr:.3f}"
    row(f"Hutchinson trace, {probes} probes", t_ref, t_ours, ref_val, ours_val)

    # --- density (SLQ) -------------------------------------------------------------------
    steps = 50
    ref = None
    original_eig = getattr(torch, "eig", None)
    if hessian is not None:
        # torch 2.x still has a torch.eig that only raises: shim it for this row.
        torch.eig = _eig_shim
        ref = lambda: _fresh(hessian, model, data=(X, y)).density(iter=steps, n_v=1)  # noqa: E731
    try:
        t_ref, out, t_ours, d = _compare(
            ref,
            lambda: curvature.hessian_density(model, loss_fn, X, y, num_iter=steps, seed=0),
            1,
        )
    finally:
        if hessian is not None:
            if original_eig is None:
                del torch.eig
            else:
                torch.eig = original_eig
    ref_val = "not available"
    if out is not None:
        ev, w = torch.tensor(out[0][0]).double(), torch.tensor(out[1][0]).double()
        ref_val = f"max {float(ev.max()):.4f}, tr {float((ev * w).sum()) * n:.2f}"
        count.take()
    ours_val = f"max {float(d.ritz_values.max()):.4f}, tr {d.trace:.2f}"
    row(f"density, {steps} Lanczos steps", t_ref, t_ours, ref_val, ours_val)

    # --- top eigenvalue over a DataLoader --------------------------------------------
    ref = None
    if hessian is not None:
        ref = lambda: _fresh(hessian, model, dataloader=loader).eigenvalues()  # noqa: E731
    t_ref, out, t_ours, rl = _compare(
        ref, lambda: curvature.hessian_eigenvalues(model, loss_fn, loader, seed=0), 1
    )
    ref_val = "not available"
    if out is not None:
        lam, rel = out[0][0], abs(out[0][0] - rl.top) / abs(rl.top)
        ref_val = f"{lam:.5f} ({count.take()}), diff {rel:.1e} {'OK' if rel < 1e-2 else 'MISMATCH'}"
    row("top eigenvalue, loader 512", t_ref, t_ours, ref_val, f"{rl.top:.5f} ({rl.iterations})")
    print(
        f"ratio = PyHessian time / optiscope time (> 1: optiscope faster), medians of up to "
        f"{REPEATS} alternating runs; HVPs = Hessian-vector products, the load-free cost."
    )


def _cifar_resnet() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from tests.zoo._registry import TinyResNet

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(128, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    model = TinyResNet(classes=10, c=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):  # a few steps: BatchNorm running statistics away from (0, 1)
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), X, y


def resnet_hvp() -> None:
    """Seconds per Hessian-vector product on a CIFAR-sized ResNet, PyHessian vs optiscope."""
    hessian = _pyhessian()
    model, X, y = _cifar_resnet()
    n = sum(p.numel() for p in model.parameters())
    print(f"\nzoo-style ResNet (BatchNorm, in-place ReLU): {n} parameters, 128 x 3x32x32 images")
    op = curvature.HessianOperator(model, F.cross_entropy, X, y)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(op.numel, generator=g)
    V = torch.randn(10, op.numel, generator=g)
    op.matvec(v)  # builds the cached graph (as PyHessian's constructor does)
    ref1 = ref10 = None
    if hessian is not None:
        from pyhessian.utils import hessian_vector_product

        h = _fresh(hessian, model, data=(X, y))
        vs = [t.reshape(p.shape) for t, p in zip(v.split(op.sizes), h.params)]
        Vs = [[t.reshape(p.shape) for t, p in zip(r.split(op.sizes), h.params)] for r in V]
        ref1 = lambda: hessian_vector_product(h.gradsH, h.params, vs)  # noqa: E731
        ref10 = lambda: [hessian_vector_product(h.gradsH, h.params, w) for w in Vs]  # noqa: E731
    print(f"{'task':<34} {'PyHess s':>8} {'optisc s':>8} {'ratio':>7}")

    def row(name: str, t_ref: float | None, t_ours: float) -> None:
        ratio = f"{t_ref / t_ours:6.2f}x" if t_ref is not None else "    n/a"
        ref_t = f"{t_ref:8.3f}" if t_ref is not None else "     n/a"
        print(f"{name:<34} {ref_t} {t_ours:8.3f} {ratio}", flush=True)

    t_ref, _, t_ours, _ = _compare(ref1, lambda: op.matvec(v), 9)
    row("1 HVP (cached graph)", t_ref, t_ours)
    t_ref, _, t_ours, _ = _compare(ref10, lambda: op.matmat(V), 3)
    row("10 HVPs (one trace block)", t_ref, t_ours)
    probes = 30
    ref = None
    if hessian is not None:
        ref = lambda: _fresh(hessian, model, data=(X, y)).trace(maxIter=probes, tol=0.0)  # noqa: E731
    t_ref, _, t_ours, _ = _compare(
        ref,
        lambda: curvature.hessian_trace(
            model, F.cross_entropy, X, y, max_iter=probes, seed=0, method="hutchinson"
        ),
        1,
    )
    row(f"Hutchinson trace, {probes} probes", t_ref, t_ours)
    print("ratio = PyHessian time / optiscope time (> 1: optiscope faster), alternating runs")


def _digits_trained(steps: int) -> tuple[torch.nn.Module, Any, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    X, y = digits_tensors()
    model = digits_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model, F.cross_entropy, X, y


def _zoo_resnet(train: bool) -> tuple[torch.nn.Module, Any, torch.Tensor, torch.Tensor]:
    from tests.zoo._registry import ZOO

    from optiscope.batch_loss import as_batch_loss

    member = next(m for m in ZOO if m.name == "resnet")
    model = member.model()
    if train:
        bl = as_batch_loss(member.loss_fn)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(8):
            for batch in member.loader():
                opt.zero_grad()
                bl(model, batch).backward()
                opt.step()
        model.zero_grad(set_to_none=True)
    X, y = member.tensors()
    return model, member.loss_fn, X, y


def hutchpp_savings() -> None:
    """HVPs Hutchinson needs for the standard error each Hutch++ variant reaches."""
    print("\nHutch++ vs Hutchinson: HVPs for equal standard error (load-free)")
    print(
        f"{'model':<30} {'budget':>6} {'Hutch++ HVPs (x fewer)':>24} "
        f"{'Krylov-Hutch++ HVPs (x fewer)':>30}"
    )
    cases = [
        ("digits MLP, 30 Adam steps", lambda: _digits_trained(30)),
        ("digits MLP, 300 Adam steps", lambda: _digits_trained(300)),
        ("zoo ResNet, at init", lambda: _zoo_resnet(False)),
        ("zoo ResNet, 8 epochs", lambda: _zoo_resnet(True)),
    ]
    for name, build in cases:
        model, loss_fn, X, y = build()
        base = curvature.hessian_trace(
            model, loss_fn, X, y, max_iter=200, seed=0, method="hutchinson"
        )
        per_probe = float(base.samples.var())
        for budget in (30, 60, 100):
            cells = []
            for method in ("hutch++", "krylov-hutch++"):
                ratios = []
                for seed in (1, 2, 3):
                    r = curvature.hessian_trace(
                        model, loss_fn, X, y, max_iter=budget, seed=seed, method=method
                    )
                    ratios.append(per_probe / r.stderr**2 / r.matvecs)
                # Median over three seeds: one standard error from ~budget/3 probes is rough.
                ratio = statistics.median(ratios)
                cells.append(f"{ratio * budget:8.0f} ({ratio:5.1f}x)")
            print(f"{name:<30} {budget:>6} {cells[0]:>24} {cells[1]:>30}", flush=True)
    print(
        "Hutchinson HVPs = var(v^T H v) over 200 probes / stderr^2 of the Hutch++ run; "
        "x fewer = that / budget (median of 3 seeds)"
    )


def main() -> None:
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    digits_table()
    resnet_hvp()
    hutchpp_savings()


if __name__ == "__main__":
    main()
