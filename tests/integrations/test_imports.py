"""``import optiscope`` (and ``optiscope.integrations``) imports neither framework."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_frameworks_are_imported_only_by_their_modules():
    code = (
        "import sys, optiscope, optiscope.integrations\n"
        "from optiscope import ScheduleLR, ZClip, lr_find\n"
        "print(sorted(m for m in ('lightning', 'transformers', 'accelerate') if m in sys.modules))"
    )
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
