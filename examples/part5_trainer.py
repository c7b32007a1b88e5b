"""The guide's Part 5 ("Complete Training Framework") on real data: sklearn's digits.

The guide trains an MLP on random MNIST-shaped tensors with AdamW, a warmup + cosine
LambdaLR stepped every batch, and gradient clipping at norm 1. This script runs the same
recipe through optiscope's AdvancedTrainer on the bundled 8x8 digits (no download),
starting with an LR range test, and saves the training curves.

Run: ``python examples/part5_trainer.py --epochs 20 --out runs/part5``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

from optiscope import *  # noqa: F403 - the guide's names, as the guide uses them
from optiscope import AdvancedTrainer, digits_loaders


def main(epochs: int = 20, out: str | Path = "runs/part5", seed: int = 0) -> AdvancedTrainer:
    """Train the guide's MLP on the digits and write curves, metrics and checkpoints.

    Args:
        epochs: Training epochs (the guide uses 20).
        out: Run directory for metrics.csv/jsonl, last.pt/best.pt and the figures.
        seed: Seeds the weights, the data split and the shuffling.

    Returns:
        The trained AdvancedTrainer.
    """
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # The guide's model, with the digits' 64 inputs instead of MNIST's 784.
    model = nn.Sequential(
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )
    train_loader, val_loader = digits_loaders(batch_size=32, seed=seed)
    optimizer = optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.01)
    trainer = AdvancedTrainer(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        device="cpu",
        run_dir=out,
        seed=seed,
    )

    # Smith's LR range test first; the model and optimizer come back untouched.
    found = trainer.lr_find(train_loader, start_lr=1e-6, end_lr=1.0, num_iter=100)
    found.plot(path=out / "lr_find.png")
    print(
        f"LR range test: steepest descent at {found.suggestion:.2e}, "
        f"min/10 at {found.suggestion_min:.2e} (the guide uses 1e-3)"
    )

    # The guide's warmup + cosine as a LambdaLR, stepped once per optimizer step.
    total_steps = len(train_loader) * epochs
    warmup_steps = len(train_loader) * max(1, epochs // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_lambda=lambda step: min(
            (step + 1) / warmup_steps,
            0.5 * (1.0 + np.cos(np.pi * (step - warmup_steps) / (total_steps - warmup_steps))),
        ),
    )
    trainer.train(
        train_loader=train_loader,
        val_loader=val_loader,
        epochs=epochs,
        scheduler=scheduler,
        max_grad_norm=1.0,
    )
    trainer.plot_training_curves(path=out / "training_curves.png")
    print(
        f"final validation accuracy {trainer.val_accuracies[-1]:.4f}; "
        f"files in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}"
    )
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/part5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.out, args.seed)
