"""The README's "With Lightning" and "With the Hugging Face Trainer" examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def _code(section: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)
    assert blocks, f"no python block under {section!r}"
    return "\n".join(blocks)


@pytest.mark.parametrize(
    ("section", "package", "report"),
    [
        ("With Lightning", "lightning", "runs/lightning/report.html"),
        ("With the Hugging Face Trainer", "transformers", "runs/hf/report/report.html"),
    ],
)
def test_readme_example_runs(section, package, report, tmp_path, monkeypatch):
    pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(_code(section), f"README:{section}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / report).is_file()
    assert namespace["callback"].report_path == Path(report)
