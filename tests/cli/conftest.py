"""Helpers for running the ``optiscope`` command in a real subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

# A run small enough for the test suite: every stage on, each at a toy resolution.
TINY_CONFIG = """\
[run]
name = "tiny"
seed = 0
threads = 1

[data]
batch_size = 128

[model]
name = "mlp"
hidden = [16]
dropout = 0.1

[optimizer]
name = "adamw"
lr = 0.01

[schedule]
name = "cosine"
warmup_epochs = 1
min_lr = 1e-4

[clipping]
name = "norm"
max_norm = 1.0

[train]
epochs = 3

[lr_find]
num_iter = 12

[landscape]
num_directions = 2
line_points = 5
plane_points = 5
max_batches = 2

[curvature]
max_iter = 5
trace_samples = 2
"""

HOSTILE_NAME = "<img src=x onerror=alert(1)>&\"'"


def run_cli(
    args: Sequence[str],
    cwd: Path | None = None,
    extra_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    nproc: int = 1,
) -> subprocess.CompletedProcess:
    """``python -m optiscope *args`` with a headless backend and one thread.

    ``nproc > 1`` starts it under ``torchrun --standalone`` (free port, gloo on CPU).
    """
    full_env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **(env or {})}
    if extra_path is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(extra_path), *filter(None, [full_env.get("PYTHONPATH")])]
        )
    launcher = []
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(
        [sys.executable, *launcher, "-m", "optiscope", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(directory: Path, text: str = TINY_CONFIG, name: str = "run.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def replace_in(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


_PROBE = (
    "<script>window.addEventListener('load',()=>{setTimeout(()=>{"
    "const im=[...document.images];"
    "const ok=im.filter(i=>i.complete&&i.naturalWidth>0).length;"
    "const pl=document.querySelectorAll('.plotly-graph-div');"
    "const drawn=document.querySelectorAll('.plotly-graph-div.js-plotly-plot').length;"
    "document.title='PROBE '+ok+'/'+im.length+' PLOTS '+drawn+'/'+pl.length;},500);});"
    "</script>"
)


def probe_in_chromium(page: Path) -> tuple[int, int, int, int]:
    """Open ``page`` in headless Chromium, offline, and count what loaded.

    Returns ``(images loaded, images, plotly figures drawn, plotly figures)``.
    """
    probe = page.with_name("probe_" + page.name)
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"))
    out = subprocess.run(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            # Any attempt to reach the network fails, so a page that needs it shows it.
            "--proxy-server=127.0.0.1:9",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe.unlink()
    m = re.search(r"PROBE (\d+)/(\d+) PLOTS (\d+)/(\d+)", out.stdout)
    assert m, out.stderr[-2000:]
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


@pytest.fixture(scope="session")
def cli() -> SimpleNamespace:
    """The helpers above (test modules cannot import conftest under importlib mode)."""
    return SimpleNamespace(
        run=run_cli,
        write_config=write_config,
        replace_in=replace_in,
        tiny=TINY_CONFIG,
        hostile=HOSTILE_NAME,
        chromium=find_chromium(),
        probe=probe_in_chromium,
    )
