"""The multi-process tests' exit check passes only a clean exit or gloo's abort at exit."""

from __future__ import annotations

import pytest

from tests._processes import assert_worker_ok


def test_clean_exits_and_the_exit_abort_pass():
    assert_worker_ok(0, b"")
    assert_worker_ok(-6, b"done\nterminate called without an active exception\n")
    assert_worker_ok(1, "torchrun: ... terminate called without an active exception ...")


@pytest.mark.parametrize(
    ("code", "stderr"),
    [(1, b"Traceback (most recent call last):\nValueError: boom"), (-6, "Aborted"), (2, ""),
     (-11, "Segmentation fault")],
)  # fmt: skip
def test_any_other_failure_fails(code, stderr):
    with pytest.raises(AssertionError, match=f"worker exited {code}"):
        assert_worker_ok(code, stderr)
