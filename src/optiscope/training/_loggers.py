"""Where the trainer's numbers go: a tqdm bar, metrics.csv + metrics.jsonl, TensorBoard.

All three only see host numbers handed over at log points, never device tensors, so
none of them can add a device sync to a training step.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "RunLog",
    "ProgressBar",
    "MetricsWriter",
    "TensorBoardWriter",
    "CSV_COLUMNS",
    "tensorboard_installed",
]

CSV_COLUMNS = [
    "kind",
    "epoch",
    "step",
    "loss",
    "grad_norm",
    "lr",
    "clipped",
    "skipped",
    "train_loss",
    "val_loss",
    "val_accuracy",
]


class ProgressBar:
    """A tqdm bar per epoch showing loss, lr and grad norm, refreshed at log points.

    Args:
        enabled: True, False, or None to show it only on a terminal (tqdm's rule).
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start_epoch(self, epoch: int, epochs: int, total: int | None, initial: int = 0) -> None:
        if self.enabled is False:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=f"epoch {epoch}/{epochs}",
            disable=None if self.enabled is None else False,
            leave=False,
            dynamic_ncols=True,
        )

    @property
    def visible(self) -> bool:
        """Whether a bar is on screen now (so plain log lines would clash with it)."""
        return self._bar is not None and not self._bar.disable

    def advance(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.update(n)

    def show(self, loss: float, lr: float, grad_norm: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{loss:.4g}", lr=f"{lr:.3g}", grad_norm=f"{grad_norm:.3g}", refresh=True
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; write them as null so every line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends step and epoch rows to ``metrics.csv`` and ``metrics.jsonl`` in ``run_dir``.

    Files are opened in append mode so a resumed run continues them; the CSV header is
    written only when the file is new.
    """

    def __init__(self, run_dir: str | Path, resume_at: tuple[int, int] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        if resume_at is not None:
            self._drop_rows_after(*resume_at)
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._csv_file = open(self.csv_path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(CSV_COLUMNS)
        self._jsonl = open(self.jsonl_path, "a")  # noqa: SIM115 - closed in close()

    def _drop_rows_after(self, steps: int, epochs: int) -> None:
        # A run resumed from a checkpoint repeats what was logged after it; keep only the
        # rows the checkpoint covers (steps < ``steps``, epochs <= ``epochs``).
        def keep(row: dict[str, Any]) -> bool:
            if row.get("kind") == "step":
                return int(row["step"]) < steps
            return int(row["epoch"]) <= epochs

        if self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if keep(r)]
            with open(self.csv_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        if self.jsonl_path.exists():
            with open(self.jsonl_path) as f:
                lines = [line for line in f if line.strip() and keep(json.loads(line))]
            with open(self.jsonl_path, "w") as f:
                f.writelines(lines)

    def write(self, rows: list[dict[str, Any]]) -> None:
        # Plain lists and one write per file: logging is part of the measured overhead.
        self._csv.writerows(
            [["" if (v := row.get(c)) is None else v for c in CSV_COLUMNS] for row in rows]
        )
        self._jsonl.write(
            "".join(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n" for row in rows)
        )
        self._csv_file.flush()
        self._jsonl.flush()

    def close(self) -> None:
        self._csv_file.close()
        self._jsonl.close()


QUEUE = 1024  # TensorBoard events buffered before add_scalar waits for the writer thread


class TensorBoardWriter:
    """Scalars for TensorBoard (``pip install optiscope[tensorboard]``).

    Raises:
        ImportError: tensorboard is not installed.
    """

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "TensorBoard logging needs tensorboard: pip install 'optiscope[tensorboard]'"
            ) from e
        # A queue that holds a few log points' scalars: with SummaryWriter's default of 10
        # the training thread blocks on the writer thread at every log point.
        self._writer = SummaryWriter(log_dir=str(log_dir), max_queue=QUEUE)

    def write(self, rows: list[dict[str, Any]]) -> None:
        epoch_end = False
        for row in rows:
            if row["kind"] == "step":
                for key in ("loss", "grad_norm", "lr"):
                    self._writer.add_scalar(f"train/{key}", row[key], row["step"])
            else:
                epoch_end = True
                for key in ("train_loss", "val_loss", "val_accuracy"):
                    if row.get(key) is not None:
                        self._writer.add_scalar(f"epoch/{key}", row[key], row["epoch"])
        if epoch_end:  # step scalars reach the file in the background, or at close at latest
            self._writer.flush()

    def scalars(self, items: list[tuple[str, float, int]]) -> None:
        """Extra ``(tag, value, step)`` scalars (a callback's, e.g. the instruments')."""
        for tag, value, step in items:
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self._writer.close()


class RunLog:
    """Everything one ``train()`` shows or writes: the bar, the files, the guide's prints.

    Only the main rank (``main=True``) prints or writes; every rank keeps the bar closed
    otherwise.

    Args:
        bar: The progress bar.
        verbose: Print the guide's log lines and epoch summaries.
        main: Whether this process is rank 0.
    """

    def __init__(self, bar: ProgressBar, verbose: bool, main: bool) -> None:
        self.bar = bar
        self.verbose = verbose and main
        self.main = main
        self.writers: list[Any] = []

    def open(
        self, directory: Path | None, tensorboard: bool, resume_at: tuple[int, int] | None
    ) -> None:
        """Open metrics files (and TensorBoard) in ``directory``; resumed runs continue them."""
        if directory is None or not self.main:
            return
        self.writers = [MetricsWriter(directory, resume_at)]
        if tensorboard:
            self.writers.append(TensorBoardWriter(directory / "tensorboard"))

    def start(self, epochs: int, device: Any, max_grad_norm: float | None) -> None:
        if self.verbose:
            print(f"Training for {epochs} epochs...\nDevice: {device}")
            print(f"Max gradient norm: {max_grad_norm}\n" + "-" * 70)

    def start_epoch(self, epoch: int, epochs: int, total: int | None, initial: int) -> None:
        if self.main:
            self.bar.start_epoch(epoch, epochs, total, initial=initial)

    def steps(self, records: list[Any]) -> None:
        """Show and write the step records that just reached the host."""
        if not self.main or not records:
            return
        last = records[-1]
        self.bar.show(last.loss, last.lr, last.grad_norm)
        rows = [{"kind": "step", **r.as_dict()} for r in records]
        for w in self.writers:
            w.write(rows)
        if self.verbose and not self.bar.visible:
            print(
                f"Epoch {last.epoch} step {last.step + 1} "
                f"Loss: {last.loss:.6f} LR: {last.lr:.6f} Grad norm: {last.grad_norm:.4f}"
            )

    @property
    def takes_scalars(self) -> bool:
        """Whether :meth:`scalars` writes anywhere (TensorBoard, on the main rank)."""
        return any(hasattr(w, "scalars") for w in self.writers)

    def scalars(self, items: list[tuple[str, float, int]]) -> None:
        """Write callbacks' ``(tag, value, step)`` scalars to the writers that take them
        (TensorBoard; ``metrics.csv``/``.jsonl`` keep the trainer's own columns)."""
        for w in self.writers:
            if hasattr(w, "scalars"):
                w.scalars(items)

    def epoch(self, row: dict[str, Any]) -> None:
        """Write an epoch row and print the guide's summary."""
        if not self.main:
            return
        for w in self.writers:
            w.write([{"kind": "epoch", **row}])
        if self.verbose:
            print(f"\nEpoch {row['epoch']} Summary:\n  Train Loss: {row['train_loss']:.6f}")
            if row["val_loss"] is not None:
                print(f"  Val Loss: {row['val_loss']:.6f}")
            if row["val_accuracy"] is not None:
                print(f"  Val Accuracy: {row['val_accuracy']:.4f}")
            print(f"  Learning Rate: {row['lr']:.6f}\n" + "-" * 70)

    def message(self, text: str) -> None:
        if self.verbose:
            print(text)

    def close(self) -> None:
        for w in self.writers:
            w.close()
        self.writers = []
        self.bar.close()


def tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
