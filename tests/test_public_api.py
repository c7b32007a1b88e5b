"""The top-level package loads its names lazily; the three lists of them agree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import optiscope

INIT = Path(optiscope.__file__)


def _type_checking_names() -> set[str]:
    tree = ast.parse(INIT.read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.dump(n.test)
    )
    return {a.asname or a.name for imp in block.body for a in imp.names}


def test_all_lazy_names_and_type_checking_imports_agree():
    lazy = set(optiscope._ORIGIN) | set(optiscope._MODULES)
    assert set(optiscope.__all__) - {"__version__"} == lazy
    assert _type_checking_names() == lazy
    assert len(optiscope.__all__) == len(set(optiscope.__all__))


def test_every_name_resolves_to_the_object_its_module_defines():
    import importlib

    for name, module in optiscope._ORIGIN.items():
        assert getattr(optiscope, name) is getattr(importlib.import_module(module), name), name
    ns: dict = {}
    exec("from optiscope import *", ns)
    assert set(optiscope.__all__) <= set(ns)


def test_importing_the_package_and_the_cli_does_not_import_torch():
    code = "import sys, optiscope, optiscope.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
