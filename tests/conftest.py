"""Shared test set-up: headless plotting, few threads, reproducible hypothesis examples and
a host-sync counter."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import contextlib  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

matplotlib.use("Agg")
# Two workers on two cores: one intra-op thread each keeps them from fighting.
torch.set_num_threads(1)

# Hypothesis draws the same examples on every run (derived from each test's name), so a
# CI run of a given commit passes or fails the same way every time. Set
# HYPOTHESIS_PROFILE=explore to draw new examples (and keep a database of failures).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@contextlib.contextmanager
def count_host_syncs() -> Iterator[Counter]:
    """Count calls that copy a tensor's value to the host.

    Patches ``Tensor.item``, ``__float__``, ``__int__``, ``__bool__``, ``tolist``,
    ``cpu`` and ``numpy`` for the duration of the block; the Counter maps method name to
    the number of calls.
    """
    counts: Counter = Counter()
    names = ["item", "__float__", "__int__", "__bool__", "tolist", "cpu", "numpy"]
    originals = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(name: str, fn):
        def inner(self, *args, **kwargs):
            counts[name] += 1
            return fn(self, *args, **kwargs)

        return inner

    try:
        for n in names:
            setattr(torch.Tensor, n, wrap(n, originals[n]))
        yield counts
    finally:
        for n, fn in originals.items():
            setattr(torch.Tensor, n, fn)


@pytest.fixture
def host_syncs():
    """The :func:`count_host_syncs` context manager, as a fixture."""
    return count_host_syncs
