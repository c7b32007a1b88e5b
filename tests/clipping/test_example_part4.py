"""The guide's Part 4 examples run as a script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "part4_clipping.py"


def test_part4_example_runs(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Max gradient: 0.5" in out  # clip_grad_value_ at 0.5 on a 10->1 linear model
    assert "Norm the optimizer now sees: 1.00" in out
    assert "NoClip(norm_type=2.0)" in out and "ZClip(" in out
    assert (tmp_path / "part4_gradient_norms.png").stat().st_size > 0
