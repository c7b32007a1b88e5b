"""The result of a landscape evaluation, with save/load and shortcuts to the plots."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optiscope._internal.atomic import atomic_write

__all__ = ["Landscape"]

_FORMAT = "optiscope.landscape/1"


@dataclass
class Landscape:
    """Metric values on a line or a plane through the weights.

    Attributes:
        alphas: Coordinates along direction 1, shape ``(n1,)``.
        betas: Coordinates along direction 2, shape ``(n2,)``, or None for a line.
        values: Metric name -> array; shape ``(n1,)`` for a line, ``(n1, n2)`` for a plane
            with ``values[m][i, j]`` at ``(alphas[i], betas[j])``.
        metadata: JSON-serialisable facts (direction kinds, normalisation, seed, parameter
            count, samples, method, seconds taken).

    Example:
        >>> ls = Landscape(np.linspace(-1, 1, 3), None, {"loss": np.array([1.0, 0.0, 1.0])})
        >>> ls.loss.tolist(), ls.is_2d
        ([1.0, 0.0, 1.0], False)
    """

    alphas: np.ndarray
    betas: np.ndarray | None
    values: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.alphas = np.asarray(self.alphas, dtype=np.float64)
        if self.betas is not None:
            self.betas = np.asarray(self.betas, dtype=np.float64)
        want = (len(self.alphas),) if self.betas is None else (len(self.alphas), len(self.betas))
        if not self.values:
            raise ValueError("values must hold at least one metric")
        for name, v in list(self.values.items()):
            v = np.asarray(v, dtype=np.float64)
            if v.shape != want:
                raise ValueError(f"values[{name!r}] has shape {v.shape}, expected {want}")
            self.values[name] = v

    @property
    def is_2d(self) -> bool:
        """True for a plane, False for a line."""
        return self.betas is not None

    @property
    def loss(self) -> np.ndarray:
        """``values["loss"]`` (or the first metric when there is no loss)."""
        return self.values.get("loss", next(iter(self.values.values())))

    def __getitem__(self, metric: str) -> np.ndarray:
        return self.values[metric]

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` with the arrays and the metadata as a JSON string.

        Written with ``optiscope._internal.atomic.atomic_write`` (a uniquely named temp
        file, fsync, rename), so a crash never leaves half a file and two writers never
        collide.

        Args:
            path: Target file, written under exactly this name (nothing is appended, so
                pass the ``.npz`` suffix you want).

        Returns:
            The path written.

        Example:
            >>> import tempfile
            >>> ls = Landscape(np.linspace(-1, 1, 3), None, {"loss": np.ones(3)})
            >>> p = ls.save(f"{tempfile.mkdtemp()}/line.npz")
            >>> p.name, Landscape.load(p).loss.tolist()
            ('line.npz', [1.0, 1.0, 1.0])
        """
        arrays = {"alphas": self.alphas}
        if self.betas is not None:
            arrays["betas"] = self.betas
        for i, v in enumerate(self.values.values()):
            arrays[f"value_{i}"] = v
        meta = {"format": _FORMAT, "metrics": list(self.values), "metadata": self.metadata}
        arrays["meta_json"] = np.array(json.dumps(meta, default=_jsonable))
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Landscape:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: The file is not a landscape file or is damaged.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta_json"]))
                if meta.get("format") != _FORMAT:
                    raise ValueError(f"{path}: not an optiscope landscape file")
                values = {m: z[f"value_{i}"] for i, m in enumerate(meta["metrics"])}
                betas = z["betas"] if "betas" in z.files else None
                return cls(z["alphas"], betas, values, meta["metadata"])
        except (KeyError, OSError, json.JSONDecodeError, EOFError) as e:
            raise ValueError(f"{path}: cannot read a landscape ({e})") from e

    def plot(self, metric: str | None = None, **kwargs: Any):
        """A line plot for a line, a filled contour for a plane (returns the Figure)."""
        from optiscope.landscape._plots import plot_contour, plot_line

        if self.is_2d:
            return plot_contour(self, metric=metric, **kwargs)
        return plot_line(self, metric=metric, **kwargs)

    def plot_surface(self, metric: str | None = None, **kwargs: Any):
        """A 3-D surface of a plane (returns the Figure)."""
        from optiscope.landscape._plots import plot_surface

        return plot_surface(self, metric=metric, **kwargs)

    def to_html(self, path: str | os.PathLike, metric: str | None = None, **kwargs: Any) -> Path:
        """Write an interactive 3-D surface page (needs plotly; embeds plotly.js)."""
        from optiscope.landscape._plots import to_html

        return to_html(self, path, metric=metric, **kwargs)

    def sharpness(self, metric: str = "loss", radius: float | None = None):
        """The sharpness summary of :func:`optiscope.landscape.sharpness`."""
        from optiscope.landscape._sharpness import sharpness

        return sharpness(self, metric=metric, radius=radius)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
