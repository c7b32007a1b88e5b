"""``optiscope schedules compare|show``: through real subprocesses, and in-process for the
remaining error cases (starting Python with torch costs seconds, so the subprocesses are
few and run concurrently)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from optiscope.cli import UsageError, _split, _value, main

COMMANDS = {
    "show": [
        "show",
        "cosine_warm_restarts",
        "--T_0",
        "10",
        "--T_mult=2",
        "--steps",
        "100",
        "--out",
        "w.png",
    ],  # fmt: skip
    "unknown-name": ["show", "cosin"],
    "bad-value": ["show", "cosine", "--T_max", "-3"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    procs = {}
    for key, args in COMMANDS.items():
        cwd = tmp_path_factory.mktemp(key)
        procs[key] = (
            cwd,
            subprocess.Popen(
                [sys.executable, "-m", "optiscope", "schedules", *args],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    out = {}
    for key, (cwd, p) in procs.items():
        stdout, stderr = p.communicate(timeout=180)
        out[key] = (cwd, p.returncode, stdout, stderr)
    return out


def test_compare_writes_the_figure(tmp_path, monkeypatch, capsys):
    # In-process: the subprocess path is covered by `show` and the error cases above.
    monkeypatch.chdir(tmp_path)
    assert main(["schedules", "compare", "--epochs", "100", "--out", "lr.png"]) == 0
    assert (tmp_path / "lr.png").stat().st_size > 10_000
    assert "lr.png" in capsys.readouterr().out


def test_show_describes_and_draws(runs):
    cwd, rc, stdout, stderr = runs["show"]
    assert rc == 0, stderr
    assert "restarts: steps 10, 30, 70" in stdout
    assert "peak: 0.1 at step 0" in stdout
    assert (cwd / "w.png").exists()


@pytest.mark.parametrize(
    "key, needle", [("unknown-name", "unknown schedule 'cosin'"), ("bad-value", "T_max")]
)
def test_bad_input_is_one_line_exit_2(runs, key, needle):
    cwd, rc, stdout, stderr = runs[key]
    assert rc == 2
    assert stderr.count("\n") == 1 and needle in stderr
    assert stderr.startswith("optiscope: error:") and "Traceback" not in stderr
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    "args, needle",
    [
        (["show", "cosine", "--lr", "0.1"], "unknown parameter 'lr'"),
        (["compare", "--epochs", "0"], "--epochs"),
        (["show", "cosine", "--steps", "x"], "--steps"),
        (["show", "one_cycle", "--pct_start", "0.001"], "pct_start"),
    ],
)
def test_more_bad_input_in_process(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["schedules", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert list(tmp_path.iterdir()) == []


def test_show_in_process_with_list_and_log(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["schedules", "show", "multistep", "--milestones", "30,80", "--log"]) == 0
    out = capsys.readouterr().out
    assert "milestones: steps 30, 80" in out
    assert (tmp_path / "lr_multistep.png").exists()


def test_value_parsing():
    assert _value("3") == 3 and _value("0.5") == 0.5 and _value("1e-3") == 1e-3
    assert _value("none") is None and _value("True") is True
    assert _value("30,80") == [30, 80]
    assert _value("cos") == "cos"
    assert _split(["--a", "1", "--b=2", "--log"]) == {"a": "1", "b": "2", "log": True}
    with pytest.raises(UsageError, match="--a needs a value"):
        _split(["--a"])
    with pytest.raises(UsageError, match="expected --param value"):
        _split(["a", "1"])
