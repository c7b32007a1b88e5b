"""Pending device values and their host history: one device-to-host copy per flush.

Each measured step leaves one flat device tensor (or none) with a host-side ``finish``
function and its small metadata. ``finish`` returns named floats (the history) and
possibly named :class:`~optiscope.instruments._hist.Histogram` records (the histograms),
both kept as ``(step, value)`` pairs per name. :meth:`Recorder.flush` concatenates every pending
tensor and copies them to the host in one transfer (the only sync). When the history is
read, each copied step's ``finish`` turns its slice of floats into named values, in step
order (sums of squares, ratios and moving averages happen there, in float64, never on
the device), and they are appended to the history; a loop that flushes at log points but
reads the history rarely pays that host arithmetic only when it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from optiscope.instruments._hist import Histogram

__all__ = ["Recorder"]

Finish = Callable[[list[float], Any], dict[str, Any]]  # name -> float or Histogram


class Recorder:
    """Pending per-step device tensors, the host history and the latest values."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor | None, Finish, Any]] = []
        self.copied: list[tuple[int, list[float], Finish, Any]] = []
        self._history: dict[str, list[tuple[int, float]]] = {}
        self._latest: dict[str, float] = {}
        self._histograms: dict[str, list[tuple[int, Histogram]]] = {}

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """Key -> ``[(step, value), ...]`` of everything flushed."""
        self._finish()
        return self._history

    @property
    def latest(self) -> dict[str, float]:
        """The last flushed value of every key."""
        self._finish()
        return self._latest

    @property
    def histograms(self) -> dict[str, list[tuple[int, Histogram]]]:
        """Key -> ``[(step, Histogram), ...]`` of everything flushed."""
        self._finish()
        return self._histograms

    def add(self, step: int, values: torch.Tensor | None, finish: Finish, meta: Any) -> None:
        """Queue one step's 1-d device tensor (no copy yet)."""
        self.pending.append((step, values, finish, meta))

    def flush(self) -> None:
        """Copy everything pending to the host (one transfer)."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        tensors = [t for _, t, _, _ in pending if t is not None]
        flat: list[float] = []
        if tensors:
            device = tensors[0].device
            joined = tensors[0] if len(tensors) == 1 else torch.cat([t.to(device) for t in tensors])
            flat = joined.tolist()  # the one device-to-host copy
        i = 0
        for step, t, finish, meta in pending:
            n = 0 if t is None else t.numel()
            self.copied.append((step, flat[i : i + n], finish, meta))
            i += n

    def _finish(self) -> None:
        copied, self.copied = self.copied, []
        history, latest = self._history, self._latest
        for step, vals, finish, meta in copied:
            for k, v in finish(vals, meta).items():
                if isinstance(v, Histogram):
                    self._histograms.setdefault(k, []).append((step, v))
                    continue
                history.setdefault(k, []).append((step, v))
                latest[k] = v

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {
            "history": {k: [list(p) for p in v] for k, v in self.history.items()},
            "latest": dict(self.latest),
            "histograms": {
                k: [
                    [s, torch.from_numpy(h.counts), [torch.from_numpy(e) for e in h.edges]]
                    for s, h in v
                ]
                for k, v in self.histograms.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending, self.copied = [], []
        self._history = {
            k: [(int(s), float(v)) for s, v in pairs] for k, pairs in state["history"].items()
        }
        self._latest = {k: float(v) for k, v in state["latest"].items()}
        self._histograms = {
            k: [(int(s), Histogram(np.asarray(c), tuple(np.asarray(e) for e in edges)))
                for s, c, edges in pairs]
            for k, pairs in state.get("histograms", {}).items()  # none in older states
        }  # fmt: skip
