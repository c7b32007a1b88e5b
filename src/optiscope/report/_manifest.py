"""What a report shows, kept as ``report.json`` in the run directory.

The pipeline writes figures and a manifest; the HTML is rendered from the manifest, so
``optiscope report RUN_DIR`` can rebuild the page later without re-running anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from optiscope._internal.atomic import atomic_write
from optiscope._internal.errors import InputError, InputFileNotFoundError

__all__ = ["ManifestError", "ReportFigure", "RunReport", "MANIFEST_NAME"]

MANIFEST_NAME = "report.json"
_KINDS = ("image", "plotly")


class ManifestError(InputError, ValueError):
    """A ``report.json`` that is not valid JSON or not a report manifest."""


@dataclass
class ReportFigure:
    """One figure of a report: a PNG, or a plotly figure saved as JSON.

    Args:
        title: Heading shown above the figure.
        caption: One line saying what to look for.
        file: Path of the PNG (``kind="image"``) or plotly JSON (``kind="plotly"``),
            relative to the run directory (or absolute).
        kind: ``"image"`` or ``"plotly"``.

    Raises:
        ValueError: Unknown ``kind`` or an empty ``file``.

    Example:
        >>> ReportFigure("Loss", "Look for a smooth decrease.", "figures/loss.png").kind
        'image'
    """

    title: str
    caption: str
    file: str
    kind: Literal["image", "plotly"] = "image"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if not str(self.file):
            raise ValueError("file must be a non-empty path")


@dataclass
class RunReport:
    """Everything a run report shows: a summary table, figures with captions, the config.

    Args:
        name: The run's name (shown as the page title; escaped when rendered).
        summary: Ordered ``label -> value`` rows of the summary table.
        figures: The figures, in the order they appear.
        config_text: The config the run used (TOML text), shown verbatim.
        notes: Extra lines shown under the summary (e.g. what was skipped and why).

    Example:
        >>> r = RunReport("demo", {"epochs": "3"})
        >>> r.summary["epochs"]
        '3'
    """

    name: str
    summary: dict[str, str] = field(default_factory=dict)
    figures: list[ReportFigure] = field(default_factory=list)
    config_text: str = ""
    notes: list[str] = field(default_factory=list)

    def add_figure(
        self, title: str, caption: str, file: str | os.PathLike, kind: str = "image"
    ) -> ReportFigure:
        """Append a figure (replacing one with the same file) and return it."""
        entry = ReportFigure(title, caption, str(file), kind)  # type: ignore[arg-type]
        self.figures = [f for f in self.figures if f.file != entry.file] + [entry]
        return entry

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the content of ``report.json``)."""
        d = asdict(self)
        d["summary"] = [[str(k), str(v)] for k, v in self.summary.items()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunReport:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ManifestError: A field is missing or has the wrong type (a ValueError).
        """
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ManifestError("report manifest must be an object with a string 'name'")
        try:
            figures = [ReportFigure(**f) for f in d.get("figures", [])]
            summary = {str(k): str(v) for k, v in d.get("summary", [])}
        except (TypeError, ValueError) as e:
            raise ManifestError(f"malformed report manifest: {e}") from e
        return cls(
            name=d["name"],
            summary=summary,
            figures=figures,
            config_text=str(d.get("config_text", "")),
            notes=[str(n) for n in d.get("notes", [])],
        )

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``run_dir/report.json`` atomically and return its path."""
        path = Path(run_dir) / MANIFEST_NAME
        atomic_write(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunReport:
        """Read ``run_dir/report.json``.

        Raises:
            InputFileNotFoundError: ``run_dir`` or its manifest does not exist (a
                FileNotFoundError).
            ManifestError: The manifest is not valid JSON or is malformed.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise InputFileNotFoundError(f"run directory not found: {run_dir}")
        path = run_dir / MANIFEST_NAME
        if not path.is_file():
            raise InputFileNotFoundError(
                f"{run_dir} has no {MANIFEST_NAME}; is it a run directory written by "
                "`optiscope train` or `optiscope demo`?"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path} is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise ManifestError(f"{path} is not a UTF-8 text file ({e.reason})") from None
        return cls.from_dict(data)
