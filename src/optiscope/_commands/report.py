"""``optiscope report RUN_DIR``: rebuild a run's ``report.html`` from its ``report.json``."""

from __future__ import annotations

import argparse

from optiscope.cli import command


@command("report", "Rebuild the self-contained report.html of a run directory.")
def add_report_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<name>)")
    parser.add_argument(
        "--out", metavar="PATH", default=None, help="where to write (default RUN_DIR/report.html)"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from optiscope.report import build_report

    path = build_report(args.run_dir, args.out)
    print(f"report: {path.absolute()}")
    return 0
