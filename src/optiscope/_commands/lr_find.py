"""``optiscope lr-find --config run.toml``: the LR range test for a config's model and data."""

from __future__ import annotations

import argparse

from optiscope.cli import command


@command("lr-find", "Run an LR range test (Smith 2015) for a config's model, data and optimizer.")
def add_lr_find_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="the run's TOML config")
    parser.add_argument(
        "--out",
        metavar="PATH",
        default=None,
        help="where to write the figure (default <run dir>/figures/lr_find.png)",
    )
    parser.add_argument("--out-dir", metavar="DIR", default=None, help="override [run] out_dir")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from optiscope.app.config import load_config
    from optiscope.app.pipeline import with_out_dir
    from optiscope.app.tools import lr_find_run

    cfg = with_out_dir(load_config(args.config), args.out_dir)
    result = lr_find_run(cfg, out=args.out)
    print(f"suggested lr: {result.suggestion:.3g}")
    print(f"figure: {result.figure}")
    return 0
