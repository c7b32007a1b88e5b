"""Curvature of the digits MLP: optiscope.curvature against PyHessian, side by side.

Same model (``digits_mlp``, 50,826 parameters, trained briefly), same data (all 1,797
digits in one batch, then a DataLoader of 512), same budgets. Printed: medians of the
wall time, the ratio PyHessian / optiscope (> 1: optiscope is faster), and the values, so
"same top eigenvalue within 1%" is checked in the same run. PyHessian is a benchmark
dependency only (``pip install pyhessian``); if it does not import it is reported as not
available. Its density calls ``torch.eig``, removed from torch, so a shim built on
``torch.linalg.eigh`` is installed for the density row only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from optiscope import curvature
from optiscope.data import digits_tensors
from optiscope.models import digits_mlp

REPEATS = 3


def _median_time(fn: Callable[[], Any], repeats: int = REPEATS) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


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


def _row(name: str, t_ref: float | None, t_ours: float, ref: str, ours: str) -> None:
    ratio = f"{t_ref / t_ours:6.2f}x" if t_ref is not None else "   n/a"
    ref_t = f"{t_ref:8.3f}" if t_ref is not None else "     n/a"
    print(f"{name:<30} {ref_t} {t_ours:9.3f} {ratio}   {ref:<28} {ours}")


def main() -> None:
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    model, X, y = _trained_model()
    loss_fn = F.cross_entropy
    n = sum(p.numel() for p in model.parameters())
    hessian = _pyhessian()
    print(f"digits MLP: {n} parameters, {len(y)} samples, torch {torch.__version__}")
    print(
        f"{'task':<30} {'PyHess s':>8} {'optisc s':>9} {'ratio':>7}   {'PyHessian':<28} optiscope"
    )

    # --- top eigenvalue, one batch ---------------------------------------------------
    def ours_top() -> curvature.EigenResult:
        return curvature.hessian_eigenvalues(model, loss_fn, X, y, top_k=1, seed=0)

    t_ours, r = _median_time(ours_top)
    t_ref, ref_val = None, "not available"
    if hessian is not None:

        def ref_top() -> float:
            torch.manual_seed(0)
            model.zero_grad(set_to_none=True)  # no stale graphs from a previous run
            h = hessian(model, loss_fn, data=(X, y), cuda=False)
            return h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0]

        t_ref, lam = _median_time(ref_top)
        rel = abs(lam - r.top) / abs(lam)
        ref_val = f"{lam:.5f} (rel diff {rel:.1e}, {'OK' if rel < 1e-2 else 'MISMATCH'})"
    _row("top eigenvalue (1 batch)", t_ref, t_ours, ref_val, f"{r.top:.5f} ({r.iterations} HVPs)")

    # --- top-5 eigenvalues --------------------------------------------------------------
    t_ours, r5 = _median_time(
        lambda: curvature.hessian_eigenvalues(model, loss_fn, X, y, top_k=5, seed=0)
    )
    t_ref, ref_val = None, "not available"
    if hessian is not None:

        def ref_top5() -> list[float]:
            torch.manual_seed(0)
            model.zero_grad(set_to_none=True)  # no stale graphs from a previous run
            h = hessian(model, loss_fn, data=(X, y), cuda=False)
            return h.eigenvalues(maxIter=100, tol=1e-3, top_n=5)[0]

        t_ref, lams = _median_time(ref_top5, repeats=1)
        ref_val = f"{lams[0]:.4f} .. {lams[-1]:.4f}"
    ours_val = f"{float(r5.eigenvalues[0]):.4f} .. {float(r5.eigenvalues[-1]):.4f}"
    _row("top-5 eigenvalues (1 batch)", t_ref, t_ours, ref_val, f"{ours_val} ({r5.iterations})")

    # --- trace, 50 probes ----------------------------------------------------------------
    probes = 30
    t_ours, tr = _median_time(
        lambda: curvature.hessian_trace(model, loss_fn, X, y, max_iter=probes, seed=0)
    )
    t_ref, ref_val = None, "not available"
    if hessian is not None:

        def ref_trace() -> list[float]:
            torch.manual_seed(0)
            model.zero_grad(set_to_none=True)  # no stale graphs from a previous run
            h = hessian(model, loss_fn, data=(X, y), cuda=False)
            return h.trace(maxIter=probes, tol=0.0)  # tol=0: all probes, as ours

        t_ref, samples = _median_time(ref_trace)
        s = torch.tensor(samples, dtype=torch.float64)
        ref_val = f"{float(s.mean()):.3f} +- {float(s.std()) / len(s) ** 0.5:.3f}"
    _row(f"trace ({probes} probes)", t_ref, t_ours, ref_val, f"{tr.trace:.3f} +- {tr.stderr:.3f}")

    # --- density (SLQ), 1 run x 50 Lanczos steps ---------------------------------------------
    steps = 50
    t_ours, d = _median_time(
        lambda: curvature.hessian_density(model, loss_fn, X, y, num_iter=steps, seed=0)
    )
    t_ref, ref_val = None, "not available"
    if hessian is not None:
        # torch 2.x still has a torch.eig that only raises; replace it for this row.
        original_eig = getattr(torch, "eig", None)
        torch.eig = _eig_shim
        try:

            def ref_density() -> tuple[list, list]:
                torch.manual_seed(0)
                model.zero_grad(set_to_none=True)
                h = hessian(model, loss_fn, data=(X, y), cuda=False)
                return h.density(iter=steps, n_v=1)

            t_ref, (ev, w) = _median_time(ref_density, repeats=1)
            ev_t, w_t = torch.tensor(ev[0]).double(), torch.tensor(w[0]).double()
            ref_val = f"max {float(ev_t.max()):.4f}, tr {float((ev_t * w_t).sum()) * n:.2f}"
        except Exception as e:
            ref_val = f"failed: {type(e).__name__}"
        finally:
            if original_eig is None:
                del torch.eig
            else:
                torch.eig = original_eig
    ours_val = f"max {float(d.ritz_values.max()):.4f}, tr {d.trace:.2f}"
    _row(f"density ({steps} Lanczos steps)", t_ref, t_ours, ref_val, ours_val)

    # --- top eigenvalue over a DataLoader ----------------------------------------------
    loader = DataLoader(TensorDataset(X, y), batch_size=512)
    t_ours, rl = _median_time(
        lambda: curvature.hessian_eigenvalues(model, loss_fn, loader, seed=0), repeats=1
    )
    t_ref, ref_val = None, "not available"
    if hessian is not None:

        def ref_loader() -> float:
            torch.manual_seed(0)
            model.zero_grad(set_to_none=True)  # no stale graphs from a previous run
            h = hessian(model, loss_fn, dataloader=loader, cuda=False)
            return h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0]

        t_ref, lam = _median_time(ref_loader, repeats=1)
        ref_val = f"{lam:.5f} (rel diff {abs(lam - rl.top) / abs(lam):.1e})"
    _row("top eigenvalue (loader 512)", t_ref, t_ours, ref_val, f"{rl.top:.5f} ({rl.iterations})")
    print("ratio = PyHessian time / optiscope time (> 1: optiscope faster); medians of", REPEATS)


if __name__ == "__main__":
    main()
