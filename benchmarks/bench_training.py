"""Trainer overhead: AdvancedTrainer vs a hand-written loop doing the same maths.

Both train the digits MLP (64-256-128-10, dropout) with AdamW, a per-step LambdaLR and
global-norm clipping at 1.0. The trainer additionally records loss, grad norm and lr of
every step (on the device, copied every ``log_interval`` steps), checks for non-finite
values, and writes metrics.csv/jsonl. The guide's own loop (``loss.item()`` every step,
an epoch-wise print) is timed too. Epochs are interleaved so machine noise hits all
three alike; medians and ratios are printed side by side.

Run: ``python benchmarks/bench_training.py``
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from optiscope import AdvancedTrainer, digits_loaders, digits_mlp

REPEATS = 15
BATCH = 32


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = digits_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 1e-3 * s))
    return model, opt, sch


def _hand_written_epoch(model, opt, sch, loader) -> None:
    model.train()
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sch.step()


def _guide_epoch(model, opt, sch, loader, grad_norms, lrs) -> float:
    # The guide's AdvancedTrainer.train_epoch: .item() for the norm and the loss every step.
    model.train()
    total = 0.0
    for x, y in loader:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grad_norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
        opt.step()
        sch.step()
        total += loss.item()
        lrs.append(opt.param_groups[0]["lr"])
    return total / len(loader)


def main() -> None:
    torch.set_num_threads(1)
    train, _ = digits_loaders(batch_size=BATCH)
    hand = _setup()
    guide = _setup()
    model, opt, sch = _setup()
    run_dir = tempfile.mkdtemp(prefix="bench_training_")
    trainer = AdvancedTrainer(
        model,
        opt,
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        progress_bar=False,
        run_dir=run_dir,
        log_interval=20,
    )
    norms, lrs = [], []
    # Warm-up epoch for each (allocator, first-call costs).
    _hand_written_epoch(*hand, train)
    _guide_epoch(*guide, train, norms, lrs)
    trainer.train(train, None, 1, scheduler=sch, max_grad_norm=1.0, checkpoint_dir=False)
    times = {"hand-written loop": [], "AdvancedTrainer": [], "guide's loop": []}
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        _hand_written_epoch(*hand, train)
        t1 = time.perf_counter()
        trainer.train(train, None, 1, scheduler=sch, max_grad_norm=1.0, checkpoint_dir=False)
        t2 = time.perf_counter()
        _guide_epoch(*guide, train, norms, lrs)
        t3 = time.perf_counter()
        times["hand-written loop"].append(t1 - t0)
        times["AdvancedTrainer"].append(t2 - t1)
        times["guide's loop"].append(t3 - t2)
    base = statistics.median(times["hand-written loop"])
    print(f"digits MLP, batch {BATCH}, {len(train)} steps/epoch, {REPEATS} interleaved epochs")
    print(f"{'loop':<22}{'median s/epoch':>16}{'ratio':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<22}{med:>16.4f}{med / base:>8.3f}")
    # Paired per-epoch ratios are less sensitive to slow drifts of the machine's load.
    paired = statistics.median(
        a / b for a, b in zip(times["AdvancedTrainer"], times["hand-written loop"])
    )
    print(f"AdvancedTrainer / hand-written, median of paired ratios: {paired:.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
