"""The guide's Parts 1-2 as scripts run with `from optiscope import *` and write figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "part1_schedules.py": [
        "step_decay.png",
        "exponential_decay.png",
        "cosine_annealing.png",
        "cosine_warm_restarts.png",
        "lr_schedules_comparison.png",
    ],
    "part2_warmup.py": [
        "linear_warmup.png",
        "warmup_cosine.png",
        "warmup_optimizer.png",
        "warmup_restarts.png",
    ],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # Both scripts start together: most of their time is importing torch.
    env = {**os.environ, "MPLBACKEND": "Agg"}
    procs = {}
    for script in EXPECTED:
        cwd = tmp_path_factory.mktemp(script.removesuffix(".py"))
        cmd = [sys.executable, str(EXAMPLES / script)]
        procs[script] = (cwd, subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True))  # fmt: skip
    out = {}
    for script, (cwd, p) in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        out[script] = (cwd, p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_and_writes_figures(runs, script):
    cwd, rc, stdout, stderr = runs[script]
    assert rc == 0, stderr
    for name in EXPECTED[script]:
        assert (cwd / name).stat().st_size > 5_000, name
    assert "restarts: steps" in stdout


def test_examples_use_the_library_not_copies():
    for script in EXPECTED:
        text = (EXAMPLES / script).read_text()
        assert "from optiscope import *" in text
        assert "\nclass " not in text and "plt.show()" not in text
