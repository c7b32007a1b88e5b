"""Checkpoint files: written with :func:`~optiscope._internal.atomic.atomic_write`, loaded
with ``weights_only=True``.

A checkpoint is a plain dict of named states (tensors, numbers, strings, lists, dicts), so
it loads with ``torch.load(weights_only=True)`` and never executes pickled code. A kill at
any moment of :func:`save_checkpoint_file` leaves either the old file or the new one at
``path``, never a torn one (temp file, fsync, rename, fsync the directory), and the next
write removes the temp files a killed writer left.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optiscope._internal.atomic import atomic_write

__all__ = [
    "CheckpointError",
    "save_checkpoint_file",
    "load_checkpoint_file",
    "rng_state",
    "set_rng_state",
    "check_writable_dir",
]

# Bumped when the layout of the checkpoint dict changes incompatibly.
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or belongs to another model or trainer."""


def save_checkpoint_file(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, ``os.replace``, fsync dir).

    Args:
        state: A dict of tensors, numbers, strings, lists and dicts.
        path: Destination file; its directory is created if needed.

    Returns:
        The path written.

    Raises:
        CheckpointError: The directory cannot be created or written.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint_file({"w": torch.ones(2)}, f"{d}/x.pt")
        >>> load_checkpoint_file(p)["w"].tolist()
        [1.0, 1.0]
    """
    try:
        return atomic_write(path, lambda f: torch.save(state, f))
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e}") from e


def load_checkpoint_file(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint_file` with ``weights_only=True``.

    Args:
        path: The checkpoint file.
        map_location: Where to put its tensors (default CPU; the trainer moves them).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: The file does not exist, is corrupt or truncated, or is not a
            checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


def check_writable_dir(directory: str | os.PathLike, what: str = "checkpoint_dir") -> Path:
    """Create ``directory`` if needed and prove it is writable, before any training.

    Raises:
        ValueError: It cannot be created or written (names ``what``).
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise ValueError(f"{what} {str(directory)!r} is not a writable directory: {e}") from e
    return directory


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step draws from, in a form ``weights_only`` can load."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        # Python's state is a tuple of ints; a list round-trips through weights_only.
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
