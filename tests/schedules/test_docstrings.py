"""Every public name of optiscope.schedules has a docstring Example that doctest runs.

``make test`` runs all docstring examples with ``--doctest-modules``; this test checks
the other half: that each public class and function has one of its own (not only its
module), and that it passes when the schedules' tests run on their own.
"""

from __future__ import annotations

import doctest

import pytest

import optiscope.schedules as package

PUBLIC = [name for name in package.__all__ if callable(getattr(package, name))]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_a_running_example(name):
    obj = getattr(package, name)
    finder = doctest.DocTestFinder(recurse=False)
    own = [t for t in finder.find(obj, name, globs={}) if t.examples]
    assert own, f"{name} has no docstring example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    globs = vars(__import__(obj.__module__, fromlist=["_"])).copy()
    for test in own:
        test.globs = globs
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 1, name
