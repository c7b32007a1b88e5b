"""Every Example in the instruments docstrings runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib

import matplotlib
import pytest

matplotlib.use("Agg")

MODULES = ["_callback", "_grad_tests", "_hist_plots", "_instruments", "_noise", "_sharpness",
           "plots"]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(f"optiscope.instruments.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
