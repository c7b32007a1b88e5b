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
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["kind"] == "step":
                for key in ("loss", "grad_norm", "lr"):
                    self._writer.add_scalar(f"train/{key}", row[key], row["step"])
            else:
                for key in ("train_loss", "val_loss", "val_accuracy"):
                    if row.get(key) is not None:
                        self._writer.add_scalar(f"epoch/{key}", row[key], row["epoch"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
