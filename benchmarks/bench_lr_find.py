"""Is the LR finder's suggestion right? Each rule against a sweep of fixed learning rates.

A suite of eight small tasks (optimizer x model x data): AdamW and SGD with momentum; an
MLP, a small CNN with BatchNorm and a transformer encoder; the digits, scikit-learn's
bundled breast-cancer and diabetes sets, synthetic tokens and a synthetic regression.
The ground truth of a task is a sweep: 16 rates, a third of a decade apart from 1e-4 to
10, each trained for the task's fixed budget (3-5 epochs) from the same initial weights
and batch order, twice (two seeds, validation losses averaged; BatchNorm statistics are
recomputed on the training set before validating, so stale running averages at high
rates do not decide). The best rate is the best grid point refined by the parabola
through its neighbours' log validation losses.

Then ``lr_find(start_lr=1e-6, end_lr=10, num_iter=100)`` gives every rule's suggestion
(``result.suggestions``), and torch-lr-finder's range test (same start, end and
iterations, its defaults otherwise) its steepest point (the rule of its
``plot(suggest_lr=True)``: ``argmin(np.gradient(loss))`` after skipping the first 10 and
last 5 points). Printed per task and rule: the suggestion, its ratio to the best rate,
and the validation loss of training at the suggestion (same budget) relative to the
sweep's best. The summary gives per rule the geometric mean and the worst of the factor
max(ratio, 1/ratio), how many tasks are within 3x, and the median and worst relative
validation loss. A robustness summary repeats the range tests with another seed, with
lr_find's default start (1e-7) and with 200 iterations (factors only). Every training
run is cached by (task, rate) within the run.

The numbers do not depend on the machine's load (no timing is measured). Run:
``python benchmarks/bench_lr_find.py`` (about 3-6 minutes on 2 shared cores).
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
# Settings of the range test: the (main table), then lr_find's own defaults and
# other initialisations and batch orders (factors only, in the robustness summary).
SETTINGS = ((0, START_LR, NUM_ITER), (1, START_LR, NUM_ITER), (0, 1e-7, NUM_ITER),
            (0, START_LR, 200))  # fmt: skip


def optiscope_suggestions(
    task: Task, seed: int = 0, start_lr: float = START_LR, num_iter: int = NUM_ITER
) -> tuple[dict[str, float | None], str | None]:
    model, opt = task.make(1e-3, seed)
    res = lr_find(model, opt, task.loss, loader(task, seed), start_lr=start_lr, end_lr=END_LR,
                  num_iter=num_iter)  # fmt: skip
    return dict(res.suggestions), res.rule


def torch_lr_finder_steepest(
    task: Task, seed: int = 0, start_lr: float = START_LR, num_iter: int = NUM_ITER
) -> float | None:
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    model, opt = task.make(start_lr, seed)
    finder = LRFinder(model, opt, task.loss)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(loader(task, seed), end_lr=END_LR, num_iter=num_iter)
    lrs, losses = finder.history["lr"][10:-5], finder.history["loss"][10:-5]
    if len(losses) < 2:
        return None
    return float(lrs[int(np.argmin(np.gradient(np.asarray(losses))))])


# --- the table ------------------------------------------------------------------------
def _factor(lr: float | None, best: float) -> float:
    if lr is None or not lr > 0:
        return math.inf
    return math.exp(abs(math.log(lr / best)))


def _summary(rows: dict[str, list[float]], rels: dict[str, list[float]] | None = None) -> None:
    head = f"{'rule':18s} {'geo-mean factor':>15s} {'worst factor':>12s} {'within 3x':>9s}"
    print(head + (f" {'median val/best':>15s} {'worst val/best':>14s}" if rels else ""))
    for name, factors in rows.items():
        geo = math.exp(sum(math.log(f) for f in factors) / len(factors))
        line = f"{name:18s} {geo:15.2f} {max(factors):12.2f} "
        line += f"{sum(f <= 3.0 for f in factors):>5d}/{len(factors):<3d}"
        if rels:
            line += f" {float(np.median(rels[name])):15.2f} {max(rels[name]):14.3g}"
        print(line)


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        factors: dict[str, list[float]] = {}
        rels: dict[str, list[float]] = {}
        robust: dict[str, list[float]] = {}
        default = None
        print(f"lr_find(start_lr={START_LR:g}, end_lr={END_LR:g}, num_iter={NUM_ITER}); "
              f"sweep: {len(GRID)} rates {GRID[0]:g}..{GRID[-1]:g}, {SEEDS} runs each")  # fmt: skip
        print(f"{'task':26s} {'rule':18s} {'lr':>9s} {'lr/best':>8s} {'val/best':>9s}")
        for task in TASKS:
            grid_best, best, best_val = sweep(task)
            for k, (seed, start_lr, num_iter) in enumerate(SETTINGS):
                sugg, default = optiscope_suggestions(task, seed, start_lr, num_iter)
                entries = {f"{n}{'*' if n == default else ''}": v for n, v in sugg.items()}
                entries["torch-lr-finder"] = torch_lr_finder_steepest(task, seed, start_lr,
                                                                      num_iter)  # fmt: skip
                for name, lr in entries.items():
                    robust.setdefault(name.rstrip("*"), []).append(_factor(lr, best))
                if k:
                    continue
                print(f"{task.name:26s} {'sweep best':18s} {best:9.3g} {1.0:8.2f} {1.0:9.2f}   "
                      f"(grid point {grid_best:.3g}, val loss {best_val:.4g})")  # fmt: skip
                for name, lr in entries.items():
                    rel = val_loss(task, lr) / best_val if lr is not None else math.inf
                    ratio = lr / best if lr is not None else math.nan
                    print(f"{'':26s} {name:18s} {lr or math.nan:9.3g} {ratio:8.2f} {rel:9.2f}")
                    factors.setdefault(name.rstrip("*"), []).append(_factor(lr, best))
                    rels.setdefault(name.rstrip("*"), []).append(rel)
        print(f"\nsummary over {len(TASKS)} tasks (factor = max(lr/best, best/lr); "
              f"* default rule: {default})")  # fmt: skip
        _summary(factors, rels)
        print(f"\nrobustness: {len(TASKS)} tasks x {len(SETTINGS)} range tests (seed, start_lr, "
              f"num_iter) in {SETTINGS}")  # fmt: skip
        _summary(robust)
        print(f"({time.perf_counter() - start:.0f} s)")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
