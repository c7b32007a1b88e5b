"""Clipping benchmarks: optiscope against torch and a timm-style per-parameter AGC loop.

On a model with 200 parameter tensors (100 Linear layers), measured side by side in one
run (round-robin, so machine noise hits every contender alike), medians of repeated blocks:

- ``clip_grad_norm_`` vs ``torch.nn.utils.clip_grad_norm_`` (target: within 5%);
- ``adaptive_clip_grad_`` vs the per-parameter loop timm uses (target: >= 2x faster);
- ``ZClip`` / ``AutoClip`` calls vs a plain ``torch.nn.utils.clip_grad_norm_`` (target:
  at most 1.5x).

Run: ``python benchmarks/bench_clipping.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from optiscope import AutoClip, NormClip, ZClip, adaptive_clip_grad_, clip_grad_norm_


def timm_adaptive_clip_grad(parameters, clip_factor=0.01, eps=1e-3, norm_type=2.0):
    """AGC as timm writes it (timm/utils/agc.py): a Python loop over parameters."""

    def unitwise_norm(x):
        if x.ndim <= 1:
            return x.norm(norm_type)
        return x.norm(norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)

    for p in parameters:
        if p.grad is None:
            continue
        p_data = p.detach()
        g_data = p.grad.detach()
        max_norm = unitwise_norm(p_data).clamp_(min=eps).mul_(clip_factor)
        grad_norm = unitwise_norm(g_data)
        clipped_grad = g_data * (max_norm / grad_norm.clamp(min=1e-6))
        new_grads = torch.where(grad_norm < max_norm, g_data, clipped_grad)
        p.grad.detach().copy_(new_grads)


def model_with_200_tensors(width: int = 64) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(100)])
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


def compare(
    contenders: dict[str, Callable[[], object]], *, inner: int = 20, blocks: int = 21
) -> dict[str, list[float]]:
    """Seconds per call of each contender, one sample per block, timed in interleaved blocks.

    The order is rotated every block so no contender always runs first (after another's
    cache traffic) or last.
    """
    names = list(contenders)
    for fn in contenders.values():  # warm-up: caches, allocator, lazy init
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for b in range(blocks):
        for name in names[b % len(names) :] + names[: b % len(names)]:
            fn = contenders[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner)
    return samples


def report(title: str, samples: dict[str, list[float]], baseline: str, target: str) -> None:
    """Print medians, the ratio of medians, and the median of per-block (paired) ratios.

    The paired ratio compares runs made seconds apart, so it is the steadier number when
    the machine's load drifts during the benchmark.
    """
    print(f"\n{title}  (target: {target})")
    base = samples[baseline]
    base_median = statistics.median(base)
    print(f"  {'':<42} {'median':>10}    {'ratio':>6}   {'paired':>6}")
    for name, s in samples.items():
        median = statistics.median(s)
        paired = statistics.median(t / b for t, b in zip(s, base))
        print(
            f"  {name:<42} {median * 1e6:8.1f} us   {median / base_median:5.2f}x   {paired:5.2f}x"
        )


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared machines: one thread keeps the ratios stable
    try:
        model = model_with_200_tensors()
        params = list(model.parameters())
        n = sum(p.numel() for p in params)
        print(f"model: 100 x Linear(64, 64), {len(params)} parameter tensors, {n:,} parameters")

        norm_clip = NormClip(1.0)
        samples = compare(
            {
                "torch.nn.utils.clip_grad_norm_": lambda: torch.nn.utils.clip_grad_norm_(
                    params, 1.0
                ),
                "optiscope.clip_grad_norm_": lambda: clip_grad_norm_(params, 1.0),
                "optiscope.NormClip": lambda: norm_clip(params),
            }
        )
        report("clip_grad_norm_", samples, "torch.nn.utils.clip_grad_norm_", "within 1.05x")

        samples = compare(
            {
                "timm-style per-parameter AGC loop": lambda: timm_adaptive_clip_grad(params),
                "optiscope.adaptive_clip_grad_": lambda: adaptive_clip_grad_(params),
            },
            inner=5,
        )
        report("adaptive clipping (AGC)", samples, "timm-style per-parameter AGC loop", "<= 0.5x")
        loop = statistics.median(samples["timm-style per-parameter AGC loop"])
        ours = statistics.median(samples["optiscope.adaptive_clip_grad_"])
        print(f"  speed-up of optiscope over the loop: {loop / ours:.2f}x")

        zclip, autoclip = ZClip(), AutoClip()
        samples = compare(
            {
                "torch.nn.utils.clip_grad_norm_": lambda: torch.nn.utils.clip_grad_norm_(
                    params, 1.0
                ),
                "optiscope.ZClip": lambda: zclip(params),
                "optiscope.AutoClip (history 1000)": lambda: autoclip(params),
            }
        )
        report("adaptive clippers", samples, "torch.nn.utils.clip_grad_norm_", "<= 1.5x")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
