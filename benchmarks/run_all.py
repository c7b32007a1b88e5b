"""Run every benchmark in this folder (``make bench``), one after another, in one process.

Each ``bench_*.py`` has a ``main()`` that prints its own table of medians and ratios
measured side by side in one run; absolute times on a shared machine are noise, ratios
are the result.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    here = Path(__file__).parent
    files = sorted(here.glob("bench_*.py"))
    if names:
        files = [f for f in files if any(n in f.stem for n in names)]
    failed = []
    for path in files:
        print(f"\n=== {path.stem} ===", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # dataclasses look their module up there
        start = time.perf_counter()
        try:
            spec.loader.exec_module(module)
            module.main()
        except Exception:  # one broken benchmark should not hide the others
            traceback.print_exc()
            failed.append(path.stem)
        print(f"({path.stem}: {time.perf_counter() - start:.1f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
