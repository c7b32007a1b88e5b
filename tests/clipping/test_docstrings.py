"""Every Example in the clipping docstrings runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "_adaptive",
    "_clippers",
    "_functional",
    "_registry",
    "_stats",
    "_tracking",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(f"optiscope.clipping.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
