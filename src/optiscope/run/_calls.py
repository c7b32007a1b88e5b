"""Calling what a config names: import paths, signature-checked keyword arguments, registries.

A config key the user got wrong (a module that does not exist, an unknown keyword, a
value optiscope's own constructors reject) becomes a :class:`ConfigError` naming the key.
What a user's own factory raises once it is called is the user's code failing, and is
left alone so its traceback shows.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from optiscope._internal.registry import lookup
from optiscope.run.config import ConfigError

__all__ = ["resolve_import", "keyword_names", "call_factory", "construct", "registry_lookup"]


def resolve_import(path: str, where: str) -> Callable[..., Any]:
    """The callable that ``package.module:attr`` names.

    Raises:
        ConfigError: The module does not exist, has no such attribute, or it is not
            callable; the message names ``where`` (the config key). An error raised
            while the user's module runs its own imports or code propagates.
    """
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Only the module the config names (or a package above it) being absent is a bad
        # key; a missing import inside the user's own module is the user's bug.
        if e.name is None or not (module_name + ".").startswith(e.name + "."):
            raise
        raise ConfigError(f"{where}: cannot import module {module_name!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where}: {path!r} is not callable")
    return obj


def keyword_names(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """``(keyword parameter names, takes **kwargs)`` of ``fn`` (``([], True)`` if unknown)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True
    names = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def check_keys(where: str, fn: Callable[..., Any], kwargs: dict[str, Any], label: str) -> None:
    """Refuse keys ``fn`` does not take, listing the ones it does.

    Raises:
        ConfigError: An unknown key.
    """
    names, var_kw = keyword_names(fn)
    unknown = [k for k in kwargs if k not in names]
    if unknown and not var_kw:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {where} for {label}; allowed: "
            + (", ".join(["name", *names]) if names else "name")
        )


def call_factory(where: str, fn: Callable[..., Any], kwargs: dict[str, Any], label: str) -> Any:
    """Call a user's factory ``fn(**kwargs)`` after checking the keys against its signature.

    Raises:
        ConfigError: An unknown key (listing the allowed ones). Whatever ``fn`` itself
            raises propagates unchanged: it is the user's code, and its traceback says why.
    """
    check_keys(where, fn, kwargs, label)
    return fn(**kwargs)


def construct(where: str, fn: Callable[..., Any], kwargs: dict[str, Any], label: str) -> Any:
    """Build one of optiscope's (or torch's) objects from config values.

    optiscope's constructors and torch's optimizers check their arguments and raise
    ``ValueError``/``TypeError`` naming the parameter (the project's contract for bad
    input), so here those are the config's values being wrong.

    Raises:
        ConfigError: An unknown key, or the constructor rejected a value (its message is
            kept, prefixed with the table).
    """
    check_keys(where, fn, kwargs, label)
    try:
        return fn(**kwargs)
    except (ValueError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else repr(e)
        raise ConfigError(f"{where} ({label}): {first}") from None


def registry_lookup(where: str, registry: dict[str, Any], name: str, kind: str) -> Any:
    """The class ``registry`` holds under ``name`` (the shared lookup rule), or ConfigError."""
    try:
        return lookup(registry, name, kind)
    except ValueError as e:
        raise ConfigError(f"{where} name: {e}") from None
