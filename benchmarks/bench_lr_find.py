"""Is the LR finder's suggestion right? Each rule against a sweep of fixed learning rates.

A suite of small tasks (optimizer x model x data): AdamW and SGD with momentum; an MLP, a
small CNN with BatchNorm and a transformer encoder; the digits, scikit-learn's bundled
breast-cancer, wine and diabetes sets, synthetic tokens and a synthetic regression. For
each task the ground truth is a sweep: the model (same initial weights, same batches)
trained for a fixed budget at each rate of a log grid, validation loss at the end; the
best rate is the grid point with the lowest validation loss.

Then one ``lr_find(start_lr=1e-6, end_lr=10, num_iter=100)`` per task gives every rule's
suggestion (``result.suggestions``), and torch-lr-finder's range test (same start, end,
iterations, its defaults otherwise) gives its steepest point (``plot(suggest_lr=True)``'s
rule: ``argmin(np.gradient(loss))`` after skipping 10 first and 5 last points). Printed
per task and rule: the suggestion, its ratio to the sweep's best rate, and the validation
loss of training at the suggestion (same budget) relative to the best of the sweep. The
summary gives, per rule, the geometric mean of max(ratio, 1/ratio), the worst such factor
and the mean relative validation loss over the suite. A sweep and every training run are
cached by (task, lr) within the run.

These are not timings; the machine's load does not change any number printed. Run:
``python benchmarks/bench_lr_find.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from optiscope import lr_find
from optiscope.data import digits_tensors
from optiscope.models import digits_cnn, digits_mlp

START_LR, END_LR, NUM_ITER = 1e-6, 10.0, 100
GRID = [1e-4 * 10 ** (k / 3) for k in range(16)]  # 1e-4 .. 10, three rates a decade
SEEDS = 2  # runs per rate of the sweep, averaged: one run's validation loss is noisy
Data = tuple[TensorDataset, TensorDataset]


# --- data -----------------------------------------------------------------------------
def _split(x: torch.Tensor, y: torch.Tensor, n_train: int, seed: int = 0) -> Data:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, va = perm[:n_train], perm[n_train:]
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])


def _standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-8)


def _digits(image: bool = False) -> Data:
    x, y = digits_tensors(image=image)
    return _split(x, y, 1400)


def _sklearn(name: str) -> Data:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    x = _standardize(torch.as_tensor(bunch.data, dtype=torch.float32))
    if name == "diabetes":
        y = _standardize(torch.as_tensor(bunch.target, dtype=torch.float32)).unsqueeze(1)
    else:
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return _split(x, y, int(0.75 * len(x)))


def _synthetic_regression() -> Data:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1200, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    y = x @ w + torch.sin(2 * x[:, :1]) + 0.1 * torch.randn(1200, 1, generator=g)
    return _split(x, y, 1000)


VOCAB, SEQ = 16, 12


def _tokens() -> Data:
    # The label is the most frequent of three token groups: needs the whole sequence.
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, VOCAB, (1024, SEQ), generator=g)
    groups = torch.stack([(tokens // 6 == k).sum(1) for k in range(3)], 1).float()
    y = (groups + 0.1 * torch.arange(3)).argmax(1)
    return _split(tokens, y, 768)


# --- models ---------------------------------------------------------------------------
class EncoderClassifier(nn.Module):
    """Token classifier on ``nn.TransformerEncoder``, mean-pooled (as the test zoo's)."""

    def __init__(self, d: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(SEQ, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, nhead=2, dim_feedforward=2 * d, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.pos).mean(dim=1))


def _mlp(inp: int, out: int, hidden: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out.squeeze(1), y.float())


# --- tasks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One optimizer x model x data combination and its fixed training budget."""

    name: str
    data: Callable[[], Data]
    model: Callable[[], nn.Module]
    loss: Callable[..., torch.Tensor]
    optimizer: str  # "adamw" | "sgdm"
    epochs: int = 3
    batch_size: int = 32

    def make(self, lr: float, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = self.model()
        if self.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        return model, opt


TASKS = (
    Task("digits mlp adamw", _digits, lambda: digits_mlp((128,)), F.cross_entropy, "adamw"),
    Task("digits mlp sgdm", _digits, lambda: digits_mlp((128,)), F.cross_entropy, "sgdm"),
    Task(
        "digits cnn adamw", lambda: _digits(True), lambda: digits_cnn(8), F.cross_entropy, "adamw"
    ),  # fmt: skip
    Task(
        "digits cnn sgdm", lambda: _digits(True), lambda: digits_cnn(8), F.cross_entropy, "sgdm"
    ),  # fmt: skip
    Task(
        "cancer mlp sgdm",
        lambda: _sklearn("breast_cancer"),
        lambda: _mlp(30, 1),
        _bce,
        "sgdm",
        epochs=5,
    ),  # fmt: skip
    Task(
        "diabetes mlp sgdm",
        lambda: _sklearn("diabetes"),
        lambda: _mlp(10, 1),
        F.mse_loss,
        "sgdm",
        epochs=5,
    ),  # fmt: skip
    Task(
        "synthetic regr mlp adamw", _synthetic_regression, lambda: _mlp(8, 1), F.mse_loss, "adamw"
    ),  # fmt: skip
    Task("tokens transformer adamw", _tokens, EncoderClassifier, F.cross_entropy, "adamw"),
)


# --- training at a fixed rate, the sweep ----------------------------------------------
_DATA: dict[str, Data] = {}
_VAL: dict[tuple[str, float], float] = {}


def data_of(task: Task) -> Data:
    if task.name not in _DATA:
        _DATA[task.name] = task.data()
    return _DATA[task.name]


def loader(task: Task, seed: int = 0) -> DataLoader:
    """Shuffled batches; the sampler yields whole batches of indices (no per-sample collate)."""
    train, _ = data_of(task)
    gen = torch.Generator().manual_seed(seed)
    batches = BatchSampler(RandomSampler(train, generator=gen), task.batch_size, False)
    return DataLoader(train, batch_size=None, sampler=batches)


def _train_once(task: Task, lr: float, seed: int) -> float:
    model, opt = task.make(lr, seed)
    batches = loader(task, seed)
    for _ in range(task.epochs):
        model.train()
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            task.loss(model(x), y).backward()
            opt.step()
    # Recompute BatchNorm statistics on the training set: at high rates the running
    # averages lag the fast-moving weights, and that, not the rate's training progress,
    # would decide the comparison (no LR finder can see it).
    update_bn(batches, model)
    model.eval()
    _, val = data_of(task)
    with torch.no_grad():
        v = float(task.loss(model(val.tensors[0]), val.tensors[1]))
    return v if math.isfinite(v) else math.inf


def val_loss(task: Task, lr: float) -> float:
    """Validation loss after ``task.epochs`` epochs at the fixed rate ``lr``, averaged over
    ``SEEDS`` initialisations and batch orders (cached)."""
    key = (task.name, float(lr))
    if key not in _VAL:
        _VAL[key] = sum(_train_once(task, lr, s) for s in range(SEEDS)) / SEEDS
    return _VAL[key]


def sweep(task: Task) -> tuple[float, float, float]:
    """The grid's best rate, that rate refined between grid points, its validation loss.

    The refinement is the vertex of the parabola through the log validation losses of
    the best grid point and its two neighbours, in log rate (a third of a decade apart).
    """
    vals = np.log([val_loss(task, lr) for lr in GRID])
    i = int(np.argmin(vals))
    offset = 0.0
    if 0 < i < len(GRID) - 1 and np.isfinite(vals[i - 1 : i + 2]).all():
        a, b, c = vals[i - 1 : i + 2]
        if a - 2 * b + c > 0:
            offset = 0.5 * (a - c) / (a - 2 * b + c)
    return GRID[i], GRID[i] * 10 ** (offset / 3), float(np.exp(vals[i]))


# --- the finders ----------------------------------------------------------------------
def optiscope_suggestions(task: Task) -> tuple[dict[str, float | None], str]:
    model, opt = task.make(1e-3)
    res = lr_find(
        model, opt, task.loss, loader(task), start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER
    )
    return dict(res.suggestions), res.rule


def torch_lr_finder_steepest(task: Task) -> float | None:
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    model, opt = task.make(START_LR)
    finder = LRFinder(model, opt, task.loss)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(loader(task), end_lr=END_LR, num_iter=NUM_ITER)
    lrs, losses = finder.history["lr"][10:-5], finder.history["loss"][10:-5]
    if len(losses) < 2:
        return None
    return float(lrs[int(np.argmin(np.gradient(np.asarray(losses))))])


# --- the table ------------------------------------------------------------------------
def _factor(lr: float | None, best: float) -> float:
    if lr is None or not lr > 0:
        return math.inf
    return math.exp(abs(math.log(lr / best)))


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        rows: dict[str, list[tuple[float, float]]] = {}
        default = None
        print(f"lr_find(start_lr={START_LR:g}, end_lr={END_LR:g}, num_iter={NUM_ITER}); "
              f"sweep: {len(GRID)} rates {GRID[0]:g}..{GRID[-1]:g}")  # fmt: skip
        print(f"{'task':26s} {'rule':18s} {'lr':>9s} {'lr/best':>8s} {'val/best':>9s}")
        for task in TASKS:
            grid_best, best, best_val = sweep(task)
            sugg, default = optiscope_suggestions(task)
            entries = {f"{k}{'*' if k == default else ''}": v for k, v in sugg.items()}
            entries["torch-lr-finder"] = torch_lr_finder_steepest(task)
            print(f"{task.name:26s} {'sweep best':18s} {best:9.3g} {1.0:8.2f} {1.0:9.2f}   "
                  f"(grid point {grid_best:.3g}, val loss {best_val:.4g})")  # fmt: skip
            for name, lr in entries.items():
                rel = val_loss(task, lr) / best_val if lr is not None else math.inf
                ratio = lr / best if lr is not None else math.nan
                print(f"{'':26s} {name:18s} {lr or math.nan:9.3g} {ratio:8.2f} {rel:9.2f}")
                rows.setdefault(name.rstrip("*"), []).append((_factor(lr, best), rel))
        print(f"\nsummary over {len(TASKS)} tasks (factor = max(lr/best, best/lr); * default: "
              f"{default})")  # fmt: skip
        print(f"{'rule':18s} {'geo-mean factor':>15s} {'worst factor':>12s} "
              f"{'within 3x':>9s} {'mean val/best':>13s}")  # fmt: skip
        for name, vals in rows.items():
            factors = [f for f, _ in vals]
            geo = math.exp(sum(math.log(f) for f in factors) / len(factors))
            within = sum(f <= 3.0 for f in factors)
            rel = sum(min(r, 100.0) for _, r in vals) / len(vals)
            print(f"{name:18s} {geo:15.2f} {max(factors):12.2f} "
                  f"{within:>5d}/{len(vals):<3d} {rel:13.3f}")  # fmt: skip
        print(f"({time.perf_counter() - start:.0f} s)")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
