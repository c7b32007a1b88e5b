"""How the multi-process tests read a worker's exit.

gloo (torch 2.13) now and then aborts a process at interpreter exit with "terminate called
without an active exception" (SIGABRT), as a group's thread is torn down during
finalisation after the process has done its work. It was seen in full-suite runs on a
2-core machine, in different tests, with the workers' results already written. That abort
says nothing about the work, so a worker passes if it exited 0 or ended in exactly that
message. Every test then reads and checks what the workers wrote, which a worker that failed
earlier never wrote. Any other non-zero exit fails with the worker's stderr.
"""

from __future__ import annotations

EXIT_ABORT = "terminate called without an active exception"


def assert_worker_ok(returncode: int, stderr: str | bytes) -> None:
    """Fail unless the worker exited 0 or only hit gloo's abort at exit (see above)."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    if returncode != 0 and EXIT_ABORT not in text:
        raise AssertionError(f"worker exited {returncode}:\n{text[-3000:]}")
