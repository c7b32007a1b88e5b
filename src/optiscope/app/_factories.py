"""Calling what a config names: import paths, signature-checked keyword arguments, registries.

Every failure becomes a :class:`~optiscope.app.config.ConfigError` naming the config key,
so the command line prints one line instead of a traceback.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from optiscope._internal.registry import lookup
from optiscope.app.config import ConfigError

__all__ = ["resolve_import", "keyword_names", "call_with", "check_keys", "registry_lookup"]


def resolve_import(path: str, where: str) -> Callable[..., Any]:
    """The callable that ``package.module:attr`` names.

    Raises:
        ConfigError: The module cannot be imported, has no such attribute, or it is not
            callable; the message names ``where`` (the config key).
    """
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import-time failure is the user's module
        raise ConfigError(f"{where}: cannot import module {module_name!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where}: {path!r} is not callable")
    return obj


def keyword_names(fn: Callable[..., Any]) -> tuple[list[str], bool]:
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


def call_with(where: str, fn: Callable[..., Any], kwargs: dict[str, Any], label: str) -> Any:
    """Call ``fn(**kwargs)`` after checking the keys against its signature.

    Raises:
        ConfigError: An unknown key (listing the allowed ones), or the factory rejected a
            value with ValueError/TypeError (its message is kept).
    """
    names, var_kw = keyword_names(fn)
    if not var_kw:
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            allowed = ", ".join(n for n in names) or "(none)"
            raise ConfigError(
                f"unknown key {unknown[0]!r} in {where} for {label}; allowed: {allowed}"
            )
    try:
        return fn(**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        # torch reports bad sizes as RuntimeError; from a config they are bad values too.
        raise ConfigError(
            f"{where} ({label}): {str(e).splitlines()[0] if str(e) else e!r}"
        ) from None


def check_keys(where: str, cls: Any, params: dict[str, Any], label: str) -> None:
    names, var_kw = keyword_names(cls)
    unknown = [k for k in params if k not in names]
    if unknown and not var_kw:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {where} for {label}; allowed: "
            + (", ".join(["name", *names]) if names else "name")
        )


def registry_lookup(where: str, registry: dict[str, Any], name: str, kind: str) -> Any:
    """The class ``registry`` holds under ``name`` (the shared lookup rule), or ConfigError."""
    try:
        return lookup(registry, name, kind)
    except ValueError as e:
        raise ConfigError(f"{where} name: {e}") from None
