"""The ``optiscope`` command (also ``python -m optiscope``): argparse, in one place.

Each command is a parser builder and a handler in :data:`COMMANDS`; the handler calls the
run package (:mod:`optiscope.run`) or an area's API, imported only when the command runs,
so ``optiscope --help`` and ``optiscope <command> --help`` never import torch.

Bad input (a bad config key, a missing file, a bad option) is an
:class:`~optiscope._internal.errors.InputError`: one line on stderr and exit code 2. Any
other exception is a bug, in optiscope or in the user's own factory, and shows its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from optiscope._internal.errors import InputError

__all__ = ["main", "build_parser", "UsageError", "COMMANDS"]


class UsageError(InputError, ValueError):
    """Bad input on the command line that argparse cannot check itself (one line, exit 2)."""


Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"optiscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optiscope: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The ``optiscope`` parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="optiscope",
        description="Learning-rate schedules, gradient clipping, training, LR range tests, "
        "loss landscapes and curvature for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add_arguments, handler in COMMANDS:
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        if handler is not None:
            command.set_defaults(func=handler)
    return parser


def _version() -> str:
    from optiscope import __version__

    return f"optiscope {__version__}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="the run's TOML config")


def _out_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", metavar="DIR", default=None, help="override [run] out_dir")


def _load(args: argparse.Namespace):
    from optiscope.run.config import load_config
    from optiscope.run.pipeline import with_out_dir

    return with_out_dir(load_config(args.config), args.out_dir)


# --- demo ---------------------------------------------------------------------------
def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", metavar="DIR", default="runs", help="parent of the run directory (default runs)"
    )
    parser.add_argument("--name", default="demo", help="run name (default demo)")
    parser.add_argument(
        "--epochs", type=_positive_int, default=None, help="override the number of epochs"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="coarse landscape grids and a short LR test (a smoke run in seconds)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the demo's config as TOML (a starting point for `optiscope train`) and exit",
    )


def _demo(args: argparse.Namespace) -> int:
    from optiscope.run.config import config_to_toml
    from optiscope.run.demo import demo_config

    cfg = demo_config(out_dir=args.out, name=args.name, epochs=args.epochs, quick=args.quick)
    if args.print_config:
        print(config_to_toml(cfg), end="")
        return 0
    from optiscope.run.pipeline import train_run

    result = train_run(cfg, overwrite=True)
    print(f"report: {result.report_path.absolute()}")
    return 0


# --- train --------------------------------------------------------------------------
def _add_train(parser: argparse.ArgumentParser) -> None:
    _config_argument(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run from its last checkpoint",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="start over even if the run directory already has checkpoints",
    )
    _out_dir_argument(parser)


def _train(args: argparse.Namespace) -> int:
    from optiscope.run.pipeline import train_run

    cfg = _load(args)
    try:
        result = train_run(cfg, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(
            f"optiscope: continue the run with: optiscope train --config {args.config} --resume",
            file=sys.stderr,
        )
        raise
    except FloatingPointError as e:
        # The trainer's own report that training diverged ([train] nonfinite = "raise"):
        # not bad input, but one line all the same, and exit code 1.
        print(f"optiscope: training stopped: {e}", file=sys.stderr)
        return 1
    if result.report_path is not None:
        print(f"report: {result.report_path.absolute()}")
    return 0


# --- lr-find ------------------------------------------------------------------------
def _add_lr_find(parser: argparse.ArgumentParser) -> None:
    _config_argument(parser)
    parser.add_argument(
        "--out",
        metavar="PATH",
        default=None,
        help="where to write the figure (default <run dir>/figures/lr_find.png)",
    )
    _out_dir_argument(parser)


def _lr_find(args: argparse.Namespace) -> int:
    from optiscope.run.pipeline import lr_find_run

    result = lr_find_run(_load(args), out=args.out)
    print(f"suggested lr: {result.suggestion:.3g}")
    print(f"figure: {result.figure}")
    return 0


# --- landscape ----------------------------------------------------------------------
def _add_landscape(parser: argparse.ArgumentParser) -> None:
    _config_argument(parser)
    parser.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="a checkpoint written by the run"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="directory for the figures (default <run dir>/figures; the run's report is "
        "rebuilt when it has one)",
    )
    _out_dir_argument(parser)


def _landscape(args: argparse.Namespace) -> int:
    from optiscope.run.pipeline import landscape_run

    result = landscape_run(_load(args), args.checkpoint, out=args.out)
    for path in result.figures:
        print(f"figure: {path}")
    if result.report_path is not None:
        print(f"report: {result.report_path.absolute()}")
    return 0


# --- report -------------------------------------------------------------------------
def _add_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<name>)")
    parser.add_argument(
        "--out", metavar="PATH", default=None, help="where to write (default RUN_DIR/report.html)"
    )


def _report(args: argparse.Namespace) -> int:
    from optiscope.report import build_report

    path = build_report(args.run_dir, args.out)
    print(f"report: {path.absolute()}")
    return 0


# --- schedules ----------------------------------------------------------------------
def _add_schedules(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="schedules_action", metavar="ACTION", required=True)
    cmp_ = sub.add_parser(
        "compare",
        help="draw the guide's four schedules side by side",
        description="Draw step, exponential, cosine and warm-restart schedules (the guide's "
        "comparison) into one figure.",
    )
    cmp_.add_argument("--epochs", type=int, default=100, help="epochs to draw (default 100)")
    cmp_.add_argument(
        "--out", default="lr_schedules_comparison.png", metavar="PATH", help="figure file"
    )
    cmp_.add_argument("--linear", action="store_true", help="linear y axis (default log)")
    cmp_.set_defaults(func=_schedules_compare)
    show = sub.add_parser(
        "show",
        help="describe and draw one schedule: show NAME --param value ...",
        description="Build a schedule by registry name with --param value pairs (e.g. "
        "`show cosine --initial_lr 0.1 --T_max 50`), print a summary and draw it. Lists "
        "are comma-separated (--milestones 30,80). Extra options: --steps N, --out PATH, --log.",
    )
    show.add_argument("name", help="schedule name, e.g. cosine, warmup_cosine, one_cycle, wsd")
    show.add_argument("params", nargs=argparse.REMAINDER, help="--param value pairs")
    show.set_defaults(func=_schedules_show)


def _schedules_compare(args: argparse.Namespace) -> int:
    from optiscope.schedules import compare_schedules

    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    compare_schedules(args.epochs, yscale="linear" if args.linear else "log", path=args.out)
    print(f"figure: {args.out}")
    return 0


def _value(text: str):
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if "," in text:
        return [_value(part) for part in text.split(",") if part]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split(tokens: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise UsageError(f"expected --param value, got {tok!r}")
        key, eq, val = tok[2:].partition("=")
        if not eq:
            if key == "log":
                out["log"] = True
                i += 1
                continue
            if i + 1 >= len(tokens):
                raise UsageError(f"--{key} needs a value")
            val = tokens[i + 1]
            i += 1
        out[key] = val
        i += 1
    return out


def _default_steps(schedule) -> int:
    import math

    length = schedule.length
    return 100 if length is None else max(1, math.ceil(length))


def _schedules_show(args: argparse.Namespace) -> int:
    from optiscope.schedules import describe, get_schedule

    opts = _split(list(args.params))
    steps = opts.pop("steps", None)
    out = opts.pop("out", None) or f"lr_{args.name}.png"
    log = opts.pop("log", False)
    params = {k: _value(v) for k, v in opts.items()}
    if "milestones" in params and not isinstance(params["milestones"], list):
        params["milestones"] = [params["milestones"]]  # `--milestones 30` means one milestone
    try:
        # The schedules check their arguments: a bad name or value here is bad input.
        schedule = get_schedule(args.name, **params)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    if steps is None:
        n = _default_steps(schedule)
    else:
        try:
            n = int(steps)
        except ValueError:
            raise UsageError(f"--steps must be an integer, got {steps!r}") from None
    if n < 1:
        raise UsageError(f"--steps must be >= 1, got {n}")
    print(describe(schedule, n))
    schedule.plot(n, path=str(out), yscale="log" if log else "linear")
    print(f"figure: {out}")
    return 0


# name, help, parser builder, handler: the whole command line.
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = [
    (
        "demo",
        "Train an MLP on the digits with warmup + cosine and clipping, then write every "
        "figure and report.html.",
        _add_demo,
        _demo,
    ),
    (
        "train",
        "Train from a TOML config; writes metrics, checkpoints, figures and a report.",
        _add_train,
        _train,
    ),
    (
        "lr-find",
        "Run an LR range test (Smith 2015) for a config's model, data and optimizer.",
        _add_lr_find,
        _lr_find,
    ),
    (
        "landscape",
        "Recompute the loss-landscape figures around a saved checkpoint.",
        _add_landscape,
        _landscape,
    ),
    ("report", "Rebuild the self-contained report.html of a run directory.", _add_report, _report),
    (
        "schedules",
        "Preview learning-rate schedules: the guide's comparison, or one by name.",
        _add_schedules,
        None,  # type: ignore[list-item] - the subcommand's actions set their own handler
    ),
]
