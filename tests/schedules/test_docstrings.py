"""The Examples in the schedules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import optiscope.schedules as package

MODULES = [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_public_api_is_documented():
    for name in package.__all__:
        obj = getattr(package, name)
        if callable(obj):
            doc = obj.__doc__ or ""
            assert "Example" in doc or name in {"Schedule"}, name
