"""atomic_write: whole files only, unique temp names, stale temp files of dead writers go."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from optiscope._internal.atomic import atomic_write, temp_files


def test_writes_bytes_str_and_callables(tmp_path):
    assert atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "t.txt", "h\u00e9").read_text(encoding="utf-8") == "h\u00e9"
    atomic_write(tmp_path / "c.bin", lambda f: f.write(b"xyz"))
    assert (tmp_path / "c.bin").read_bytes() == b"xyz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a",
        "c.bin",
        "t.txt",
    ]


def test_mode_and_bad_data(tmp_path):
    p = atomic_write(tmp_path / "m", "x", mode=0o640)
    assert p.stat().st_mode & 0o777 == 0o640
    with pytest.raises(TypeError, match="data must be bytes, str or a callable"):
        atomic_write(tmp_path / "n", 3)  # type: ignore[arg-type]


def test_a_failing_writer_keeps_the_old_file_and_no_temp(tmp_path):
    target = atomic_write(tmp_path / "f", "old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, boom)
    assert target.read_text() == "old" and temp_files(target) == []


def test_concurrent_writers_never_collide(tmp_path):
    target = tmp_path / "shared"
    errors = []

    def write(k):
        try:
            for _ in range(20):
                atomic_write(target, str(k) * 1000)
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = target.read_text()
    assert len(text) == 1000 and len(set(text)) == 1 and temp_files(target) == []


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "ckpt.pt"
    # A pid that is certainly dead: a child that has exited and been reaped.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".ckpt.pt.{dead_pid}.deadbeef.tmp"
    stale.write_bytes(b"torn")
    live = tmp_path / f".ckpt.pt.{os.getppid()}.cafe0000.tmp"  # a live process's write
    live.write_bytes(b"in flight")
    other = tmp_path / f".other.pt.{dead_pid}.deadbeef.tmp"  # another file's: not ours
    other.write_bytes(b"x")
    assert temp_files(target) == sorted([stale, live])
    atomic_write(target, b"new")
    assert not stale.exists() and live.exists() and other.exists()
    assert target.read_bytes() == b"new"
