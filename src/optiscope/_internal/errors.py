"""The project's own error for bad input from a user, which the command line prints as one line.

A config key with a bad value, a missing or corrupt input file, a bad command-line option:
each is raised as a subclass of :class:`InputError`, and ``optiscope`` prints its message
on one line and exits with code 2. Anything else (a bug in optiscope, or in a model or data
factory the user wrote) is not an ``InputError`` and shows its traceback. Each subclass
also derives from the builtin a caller would expect (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working for library users.

Example:
    >>> issubclass(InputFileNotFoundError, FileNotFoundError)
    True
    >>> try:
    ...     raise InputFileNotFoundError("config file not found: run.toml")
    ... except InputError as e:
    ...     print(e)
    config file not found: run.toml
"""

from __future__ import annotations

__all__ = ["InputError", "InputFileNotFoundError"]


class InputError(Exception):
    """Bad input from the user (a config, a file, a command line); one line, exit 2."""


class InputFileNotFoundError(InputError, FileNotFoundError):
    """An input file the user named does not exist."""
