"""Name registries (schedules, clippers): one lookup rule and one set of errors.

A registry is a plain ``dict`` from a lower-case snake_case name to a class. Lookups
ignore case and surrounding spaces (``" ZClip "`` is ``"zclip"``). An unknown name is a
``ValueError`` that suggests the nearest names (difflib) and lists the known ones; an
unknown keyword is a ``TypeError`` (as Python's own for a bad keyword argument) that
names the allowed keywords.

Example:
    >>> REG = {"norm": dict, "value": list}
    >>> lookup(REG, " Norm ", "clipper")
    <class 'dict'>
    >>> lookup(REG, "nrom", "clipper")
    Traceback (most recent call last):
        ...
    ValueError: unknown clipper 'nrom' (did you mean 'norm'?); known: norm, value
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["lookup", "check_keywords", "build", "nearest"]

T = TypeVar("T")


def nearest(word: str, choices: list[str]) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the up to three closest choices, or ``""``."""
    close = difflib.get_close_matches(word, choices, n=3)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def lookup(registry: Mapping[str, T], name: Any, kind: str) -> T:
    """The entry of ``registry`` called ``name`` (case and surrounding spaces ignored).

    Args:
        registry: Lower-case name -> entry.
        name: The name asked for.
        kind: What the entries are, for messages (``"schedule"``, ``"clipper"``).

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: No such name; the message suggests the nearest and lists all.
    """
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a string, got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    if key not in registry:
        raise ValueError(
            f"unknown {kind} {name!r}{nearest(key, list(registry))}; "
            f"known: {', '.join(sorted(registry))}"
        )
    return registry[key]


def _keywords(fn: Callable[..., Any]) -> list[str] | None:
    """Keyword parameters of ``fn``, or None when it takes ``**kwargs`` (anything goes)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name != "self"]


def check_keywords(fn: Callable[..., Any], params: Mapping[str, Any], label: str) -> None:
    """Raise ``TypeError`` naming the first key of ``params`` that ``fn`` does not take.

    Args:
        fn: The class or function that will receive ``params``.
        params: The keyword arguments.
        label: Who receives them, for the message (``"schedule 'cosine'"``).
    """
    allowed = _keywords(fn)
    if allowed is None:
        return
    for key in params:
        if key not in allowed:
            raise TypeError(
                f"unknown parameter {key!r} for {label}{nearest(key, allowed)}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )


def build(registry: Mapping[str, Callable[..., T]], name: Any, kind: str, params: Mapping) -> T:
    """``lookup`` the entry, ``check_keywords``, then call it with ``params``."""
    cls = lookup(registry, name, kind)
    check_keywords(cls, params, f"{kind} {name.strip().lower()!r}")
    return cls(**params)
