"""``optiscope train --config run.toml [--resume]``: the config-driven training run."""

from __future__ import annotations

import argparse
import sys

from optiscope.cli import command


@command("train", "Train from a TOML config; writes metrics, checkpoints, figures and a report.")
def add_train_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="the run's TOML config")
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
    parser.add_argument("--out-dir", metavar="DIR", default=None, help="override [run] out_dir")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from optiscope.app.config import load_config
    from optiscope.app.pipeline import train_run, with_out_dir

    cfg = with_out_dir(load_config(args.config), args.out_dir)
    try:
        result = train_run(cfg, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(
            f"optiscope: continue the run with: optiscope train --config {args.config} --resume",
            file=sys.stderr,
        )
        raise
    except FloatingPointError as e:
        # Training diverged (non-finite losses): not bad input, but one line all the same.
        print(f"optiscope: training stopped: {e}", file=sys.stderr)
        return 1
    if result.report_path is not None:
        print(f"report: {result.report_path.absolute()}")
    return 0
