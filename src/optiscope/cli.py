"""The ``optiscope`` command (also ``python -m optiscope``).

Each subcommand registers itself in :data:`COMMANDS` through ``add_<name>_parser``;
errors from bad input become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "UsageError"]


class UsageError(ValueError):
    """Bad input from the command line or a config file (printed as one line, exit 2)."""


# name -> (help, function that adds arguments to a subparser and sets `func`)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help: str):
    """Register ``fn(parser)`` as the builder of subcommand ``name``."""

    def register(fn: Callable[[argparse.ArgumentParser], None]):
        COMMANDS[name] = (help, fn)
        return fn

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optiscope",
        description="Learning-rate schedules, gradient clipping, training, LR range tests, "
        "loss landscapes and curvature for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, build) in COMMANDS.items():
        build(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _version() -> str:
    from optiscope import __version__

    return f"optiscope {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    _load_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError, FileNotFoundError, IsADirectoryError) as e:
        print(f"optiscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optiscope: interrupted", file=sys.stderr)
        return 130


def _load_commands() -> None:
    # Importing a command module registers it; kept lazy so `--help` stays fast and an
    # area that is not installed does not break the others.
    import importlib

    for module in _COMMAND_MODULES:
        importlib.import_module(module)


# Modules that define subcommands with @command(...).
_COMMAND_MODULES: list[str] = [
    "optiscope._commands.demo",
    "optiscope._commands.train",
    "optiscope._commands.lr_find",
    "optiscope._commands.landscape",
    "optiscope._commands.report",
    "optiscope._commands.schedules",
]
