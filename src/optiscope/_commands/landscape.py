"""``optiscope landscape --config run.toml --checkpoint PATH``: landscape figures for weights."""

from __future__ import annotations

import argparse

from optiscope.cli import command


@command("landscape", "Recompute the loss-landscape figures around a saved checkpoint.")
def add_landscape_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="the run's TOML config")
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
    parser.add_argument("--out-dir", metavar="DIR", default=None, help="override [run] out_dir")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from optiscope.app.config import load_config
    from optiscope.app.pipeline import with_out_dir
    from optiscope.app.tools import landscape_run

    cfg = with_out_dir(load_config(args.config), args.out_dir)
    result = landscape_run(cfg, args.checkpoint, out=args.out)
    for path in result.figures:
        print(f"figure: {path}")
    if result.report_path is not None:
        print(f"report: {result.report_path.absolute()}")
    return 0
