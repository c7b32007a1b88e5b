"""Edge of stability: full-batch gradient descent drives the sharpness up to 2/lr, and it stays.

Cohen et al. (2021), "Gradient Descent on Neural Networks Typically Occurs at the Edge of
Stability", Fig. 1: train a tanh MLP with MSE by full-batch gradient descent at a few
learning rates and track the sharpness (the top Hessian eigenvalue of the training loss).
It rises while training (progressive sharpening) until it reaches the stability threshold
2/lr of gradient descent on a quadratic, then hovers there while the loss keeps falling,
non-monotonically. Here: 256 of scikit-learn's bundled digits (standardised pixels,
one-hot targets), a 64-64-64-10 tanh MLP, ``optiscope.instruments.Instruments`` measuring
the sharpness every few steps on the full batch (warm-started Lanczos), and with it
Cockpit's effective step size alpha: near -1 (tiny progress along the step) while the
sharpness is far below 2/lr, near 1 (each step lands on the other side of the valley, at
the same loss) once it hovers at 2/lr.

Run: ``python examples/edge_of_stability.py --out runs/edge_of_stability.png`` (about ten
seconds on one CPU core).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from optiscope.data import digits_tensors
from optiscope.instruments import Instruments
from optiscope.instruments.plots import alpha_figure, sharpness_figure

LRS = (0.25, 0.4, 0.6)


def digits_regression(samples: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``samples`` digits as standardised 64-pixel rows and one-hot targets."""
    x, y = digits_tensors()
    x = x[:samples].reshape(samples, -1).float()
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x, nn.functional.one_hot(y[:samples], 10).float()


def tanh_mlp(width: int = 64, seed: int = 0) -> nn.Module:
    """64-width-width-10 with tanh, PyTorch's default initialisation under ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10)
    )


def half_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 |output - target|^2`` per sample, averaged (Cohen et al.'s MSE)."""
    return 0.5 * (output - target).square().sum(dim=1).mean()


def train_gd(
    lr: float, *, steps: int = 1000, every: int = 10, samples: int = 256, width: int = 64,
    seed: int = 0,
) -> dict[str, list[tuple[int, float]]]:  # fmt: skip
    """Full-batch gradient descent at ``lr``; the instruments' history (loss, sharpness,
    alpha).

    ``sharpness`` and ``alpha`` are measured every ``every`` steps on the whole training
    set, the sharpness with its threshold ``sharpness_threshold`` (2/lr for plain SGD).
    """
    x, t = digits_regression(samples)
    model = tanh_mlp(width, seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    inst = Instruments(
        model, opt, quantities=("loss", "sharpness", "alpha"), sharpness_every=every,
        grad_tests_every=every, probe_batch=(x, t), loss_fn=half_squared_error,
        sharpness_iters=30,
    )  # fmt: skip
    for step in range(1, steps + 1):
        loss = half_squared_error(model(x), t)
        loss.backward()
        inst.after_backward(loss, batch_size=samples)
        opt.step()
        inst.after_step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            inst.flush()  # a log point: the one host copy of the pending values
    inst.flush()
    return inst.history


def edge_figure(runs: dict[float, dict[str, list[tuple[int, float]]]]) -> object:
    """Training loss of every run, then per run its sharpness (with 2/lr) above its alpha."""
    import matplotlib.pyplot as plt

    n = 1 + len(runs)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 7.2), squeeze=False)
    for lr, history in runs.items():
        steps, losses = zip(*history["loss"])
        axes[0, 0].plot(steps, losses, label=f"lr = {lr:g}")
    axes[0, 0].set(xlabel="step", ylabel="train loss", yscale="log", title="Full-batch GD")
    axes[0, 0].legend()
    axes[1, 0].axis("off")
    for i, (lr, history) in enumerate(runs.items(), 1):
        sharpness_figure(history, ax=axes[0, i])
        axes[0, i].set_title(f"lr = {lr:g}: sharpness vs 2/lr = {2 / lr:.3g}")
        if history.get("alpha"):
            alpha_figure(history, ax=axes[1, i])
            axes[1, i].set_title(f"lr = {lr:g}: alpha")
    fig.tight_layout()
    return fig


def main(
    lrs: Sequence[float] = LRS, *, steps: int = 1000, every: int = 10, samples: int = 256,
    out: str | Path | None = "runs/edge_of_stability.png",
) -> dict[float, dict[str, list[tuple[int, float]]]]:  # fmt: skip
    """Train at each rate, print where the sharpness ended against 2/lr, save the figure.

    Returns:
        ``lr -> history`` (``loss``, ``sharpness``, ``sharpness_threshold``, ...).
    """
    torch.set_num_threads(1)
    runs = {lr: train_gd(lr, steps=steps, every=every, samples=samples) for lr in lrs}
    for lr, history in runs.items():
        values = [v for _, v in history["sharpness"]]
        tail = values[-max(1, len(values) // 5) :]
        alpha = sorted(v for _, v in history["alpha"][-len(tail) :])
        print(
            f"lr {lr:g}: sharpness {values[0]:.3g} at the start, {sum(tail) / len(tail):.3g} "
            f"over the last fifth of training; 2/lr = {2 / lr:.3g}; median alpha there "
            f"{alpha[len(alpha) // 2]:.3g}"
        )
    if out is not None:
        from optiscope.run.figures import save_figure

        print(f"figure: {save_figure(edge_figure(runs), out)}")
    return runs


def _parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=10, help="steps between sharpness measurements")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--out", default="runs/edge_of_stability.png", help="the PNG to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    a = _parse()
    main(a.lrs, steps=a.steps, every=a.every, samples=a.samples, out=a.out)
