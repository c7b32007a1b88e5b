"""Part 4 of the guide (gradient clipping), run with optiscope in place of its definitions.

Steps 1-3 are the guide's examples as written (``clip_grad_value_``, ``clip_grad_norm_``,
``train_with_gradient_tracking`` + ``plot_gradient_norms``), trained here on the bundled
digits data. The last part shows what optiscope adds: adaptive clippers, unit-wise AGC
and per-layer gradient tracking.

Run: ``python examples/part4_clipping.py [--out DIR] [--epochs N] [--quick]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # save, never block

import torch
import torch.nn as nn
import torch.optim as optim

from optiscope import *


def step1_clip_by_value() -> None:
    model = nn.Linear(10, 1)
    optimizer = optim.SGD(model.parameters(), lr=0.01)  # noqa: F841 (as in the guide)

    # Dummy forward/backward
    x = torch.randn(32, 10)
    y = torch.randn(32, 1)
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()

    print("Before clipping:")
    print(
        f"Max gradient: {max(p.grad.abs().max() for p in model.parameters() if p.grad is not None)}"
    )

    clip_grad_value_(model.parameters(), clip_value=0.5)

    print("After clipping:")
    print(
        f"Max gradient: {max(p.grad.abs().max() for p in model.parameters() if p.grad is not None)}"
    )


def step2_clip_by_norm() -> None:
    model = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))
    optimizer = optim.SGD(model.parameters(), lr=0.01)  # noqa: F841 (as in the guide)

    # Create exploding gradient scenario
    x = torch.randn(32, 10) * 100
    y = torch.randn(32, 1)
    loss = ((model(x) - y) ** 2).mean()
    loss.backward(retain_graph=True)  # the guide backpropagates twice through one graph

    print("Before clipping:")
    total_norm = clip_grad_norm_(model.parameters(), max_norm=float("inf"))
    print(f"Total gradient norm: {total_norm:.2f}")

    # Clip
    loss.backward()  # Re-compute gradients (they accumulate: twice the first norm)
    clipped_norm = clip_grad_norm_(model.parameters(), max_norm=1.0)
    print("\nAfter clipping to max_norm=1.0:")
    # As in torch, the returned value is the norm *before* clipping; measure after with inf.
    print(f"Total gradient norm: {clipped_norm:.2f}")
    after = clip_grad_norm_(model.parameters(), max_norm=float("inf"))
    print(f"Norm the optimizer now sees: {after:.2f}")


def step3_track(out: Path | None, epochs: int) -> None:
    torch.manual_seed(0)
    train_loader, _ = digits_loaders(batch_size=64)
    model = digits_mlp()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grad_norms, losses = train_with_gradient_tracking(
        model, train_loader, optimizer, epochs=epochs, max_grad_norm=1.0
    )
    print(
        f"\n{len(grad_norms)} steps: grad norm {grad_norms[0]:.3f} -> {grad_norms[-1]:.3f}, "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    fig = plot_gradient_norms(grad_norms, losses, max_grad_norm=1.0)
    if out is not None:
        fig.savefig(out / "part4_gradient_norms.png")


def beyond_the_guide(max_batches: int | None) -> None:
    torch.manual_seed(0)
    train_loader, _ = digits_loaders(batch_size=64)
    for clipper in [NormClip(1.0), AGC(clip_factor=0.01), AutoClip(10.0), ZClip(), NoClip()]:
        torch.manual_seed(0)
        model = digits_mlp()
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        tracker = GradientTracker(model)
        clipped = []
        for i, (data, target) in enumerate(train_loader):
            if max_batches is not None and i >= max_batches:
                break
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(data), target)
            loss.backward()
            tracker.record()  # pre-clip, per layer, stays on the device
            clipped.append(clipper(model.parameters()).clipped)
            optimizer.step()
        share = torch.stack(clipped).float().mean().item()  # one sync, after the epoch
        summary = tracker.summary()
        layers = ", ".join(f"{k}: {v['mean']:.3f}" for k, v in summary.items() if k != "global")
        print(f"{clipper!r:<55} clipped {share:5.1%} of steps; mean layer norms {layers}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="save the figure here")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 epoch, a few batches (tests)")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the guide's steps 1-2 draw random data; fix it so runs agree
    step1_clip_by_value()
    step2_clip_by_norm()
    step3_track(args.out, args.epochs)
    beyond_the_guide(5 if args.quick else None)


if __name__ == "__main__":
    main()
