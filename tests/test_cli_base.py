"""The command line's own behaviour, through a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import optiscope


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "optiscope", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands_and_exits_zero():
    out = _run("--help")
    assert out.returncode == 0
    assert "usage: optiscope" in out.stdout


def test_version():
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"optiscope {optiscope.__version__}"


def test_unknown_command_is_a_usage_error():
    out = _run("no-such-command")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_help_of_every_command_does_not_import_torch():
    code = (
        "import sys\n"
        "from optiscope.cli import COMMANDS, main\n"
        "for name, *_ in COMMANDS:\n"
        "    try:\n"
        "        main([name, '--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, name\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "TORCH False"
