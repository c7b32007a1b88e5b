"""One atomic file write for the whole project: temp file, fsync, rename, fsync the directory.

A kill at any moment of :func:`atomic_write` leaves either the old file or the new one at
``path``, never a torn one. The data goes to a temporary file in the same directory (so
the rename never crosses file systems), named ``.<name>.<pid>.<random>.tmp`` so that two
writers, in one process or several, never collide. It is flushed and fsynced, then
replaces ``path`` with ``os.replace`` (atomic on POSIX and Windows), and the directory is
fsynced so the rename itself survives a power cut.

A process killed with SIGKILL in the middle of a write cannot clean up after itself. The
next write to the same ``path`` removes the temp files of that path whose writer process
no longer exists; temp files of live writers are left alone.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "temp_files"]

Data = bytes | str | Callable[[IO[bytes]], object]


def atomic_write(path: str | os.PathLike, data: Data, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: Destination file; its directory is created if needed.
        data: ``bytes``, a ``str`` (written as UTF-8), or a callable that writes to the
            binary file object it is given (``lambda f: torch.save(state, f)``).
        mode: Permission bits for the new file (default: ``0o666`` minus the umask, as
            ``open`` gives; a bare temp file would be ``0o600``).

    Returns:
        The path written.

    Raises:
        OSError: The directory cannot be created or written (nothing is left behind).
        TypeError: ``data`` is none of the accepted kinds.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> p = atomic_write(f"{d}/a.txt", "hello")
        >>> p.read_text(), temp_files(p)
        ('hello', [])
    """
    if not isinstance(data, (bytes, bytearray, str)) and not callable(data):
        raise TypeError(
            f"data must be bytes, str or a callable writing to a file, got {type(data).__name__}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask
        os.replace(tmp, path)
    except BaseException:
        # Never leave a temp file behind, also on KeyboardInterrupt.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def temp_files(path: str | os.PathLike) -> list[Path]:
    """The temp files of writes to ``path`` still on disk (in flight, or left by a kill)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _pattern(path)
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def _pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.tmp")


def _remove_stale(path: Path) -> None:
    pattern = _pattern(path)
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is not None and not _alive(int(match.group(1))):
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's process) or cannot tell: leave it
    return True


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; not possible on Windows, where os.replace is enough.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
