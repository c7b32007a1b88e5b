"""``optiscope demo``: the whole guide on real data, in one run directory and one page."""

from __future__ import annotations

import argparse

from optiscope.cli import command


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value


@command(
    "demo",
    "Train an MLP on the digits with warmup + cosine and clipping, then write every figure "
    "and report.html.",
)
def add_demo_parser(parser: argparse.ArgumentParser) -> None:
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
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from optiscope.app.demo import demo_config

    cfg = demo_config(out_dir=args.out, name=args.name, epochs=args.epochs, quick=args.quick)
    if args.print_config:
        from optiscope.app.config import config_to_toml

        print(config_to_toml(cfg), end="")
        return 0
    from optiscope.app.pipeline import train_run

    result = train_run(cfg, overwrite=True)
    print(f"report: {result.report_path.absolute()}")
    return 0
