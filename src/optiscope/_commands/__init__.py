"""Subcommands of the ``optiscope`` command line; each module registers with ``@command``."""
