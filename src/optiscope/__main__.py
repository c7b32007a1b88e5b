"""``python -m optiscope`` is the ``optiscope`` command."""

from optiscope.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
