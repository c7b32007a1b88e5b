"""``optiscope schedules compare|show``: preview learning-rate schedules from the shell.

``compare`` draws the guide's comparison of four schedules; ``show NAME --param value``
builds one schedule from the registry, prints :func:`describe` and draws it.
"""

from __future__ import annotations

import argparse
import math

from optiscope.cli import UsageError, command


@command("schedules", "Preview learning-rate schedules: the guide's comparison, or one by name.")
def add_schedules_parser(parser: argparse.ArgumentParser) -> None:
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
    cmp_.set_defaults(func=_compare)

    show = sub.add_parser(
        "show",
        help="describe and draw one schedule: show NAME --param value ...",
        description="Build a schedule by registry name with --param value pairs (e.g. "
        "`show cosine --initial_lr 0.1 --T_max 50`), print a summary and draw it. Lists "
        "are comma-separated (--milestones 30,80). Extra options: --steps N, --out PATH, --log.",
    )
    show.add_argument("name", help="schedule name, e.g. cosine, warmup_cosine, one_cycle, wsd")
    show.add_argument("params", nargs=argparse.REMAINDER, help="--param value pairs")
    show.set_defaults(func=_show)


def _compare(args: argparse.Namespace) -> int:
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
    length = schedule.length
    return 100 if length is None else max(1, math.ceil(length))


def _show(args: argparse.Namespace) -> int:
    from optiscope.schedules import describe, get_schedule

    opts = _split(list(args.params))
    steps = opts.pop("steps", None)
    out = opts.pop("out", None) or f"lr_{args.name}.png"
    log = opts.pop("log", False)
    params = {k: _value(v) for k, v in opts.items()}
    if "milestones" in params and not isinstance(params["milestones"], list):
        params["milestones"] = [params["milestones"]]  # `--milestones 30` means one milestone
    schedule = get_schedule(args.name, **params)
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
