"""Pending device values and their host history: one device-to-host copy per flush.

Each measured step becomes one flat device tensor (its scalars and per-layer vectors
concatenated) with a tuple of keys; :meth:`Recorder.flush` concatenates all pending
tensors, copies them to the host in one transfer and appends ``(step, value)`` pairs to
the history.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Recorder"]


class _Entry:
    __slots__ = ("step", "keys", "scalars", "vectors", "host")

    def __init__(self, step: int) -> None:
        self.step = step
        self.keys: list[str] = []
        self.scalars: list[torch.Tensor] = []
        self.vectors: list[tuple[tuple[str, ...], torch.Tensor]] = []
        self.host: dict[str, float] = {}


class _Builder:
    """What one step adds: scalars, per-layer vectors and host floats."""

    def __init__(self, recorder: Recorder, step: int) -> None:
        self._recorder = recorder
        self.entry = _Entry(step)

    def add(self, key: str, value: torch.Tensor) -> None:
        self.entry.keys.append(key)
        self.entry.scalars.append(value)

    def add_layers(self, kind: str, values: torch.Tensor) -> None:
        self.entry.vectors.append((self._recorder.layer_keys(kind), values))

    def host(self, key: str, value: float) -> None:
        self.entry.host[key] = float(value)


class Recorder:
    """Pending per-step device tensors, the host history and the latest values."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._layer_keys: dict[str, tuple[str, ...]] = {}
        self.pending: list[tuple[int, tuple[str, ...], torch.Tensor | None, dict[str, float]]] = []
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.latest: dict[str, float] = {}

    def layer_keys(self, kind: str) -> tuple[str, ...]:
        keys = self._layer_keys.get(kind)
        if keys is None:
            keys = tuple(f"layers/{n}/{kind}" for n in self.names)
            self._layer_keys[kind] = keys
        return keys

    def begin(self, step: int) -> _Builder:
        return _Builder(self, step)

    def end(self, builder: _Builder) -> None:
        e = builder.entry
        parts: list[torch.Tensor] = []
        keys: tuple[str, ...] = tuple(e.keys)
        if e.scalars:
            device = e.scalars[0].device
            parts.append(torch.stack([s.to(device).float() for s in e.scalars]))
        for vkeys, vec in e.vectors:
            keys += vkeys
            parts.append(vec.float())
        if not parts and not e.host:
            return
        device = parts[0].device if parts else None
        flat = torch.cat([p.to(device) for p in parts]) if parts else None
        self.pending.append((e.step, keys, flat, e.host))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        tensors = [t for _, _, t, _ in pending if t is not None]
        values: list[float] = []
        if tensors:
            device = tensors[0].device
            values = torch.cat([t.to(device) for t in tensors]).tolist()  # the one copy
        i = 0
        history, latest = self.history, self.latest
        for step, keys, t, host in pending:
            if t is not None:
                for k, v in zip(keys, values[i : i + len(keys)]):
                    history.setdefault(k, []).append((step, v))
                    latest[k] = v
                i += len(keys)
            for k, v in host.items():
                history.setdefault(k, []).append((step, v))
                latest[k] = v

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {
            "history": {k: [list(p) for p in v] for k, v in self.history.items()},
            "latest": dict(self.latest),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = []
        self.history = {
            k: [(int(s), float(v)) for s, v in pairs] for k, pairs in state["history"].items()
        }
        self.latest = {k: float(v) for k, v in state["latest"].items()}
