"""Clippers by name, so a config file or the CLI can say ``clipper: zclip``."""

from __future__ import annotations

from typing import Any

from optiscope._internal.registry import build
from optiscope.clipping._adaptive import AutoClip, ZClip
from optiscope.clipping._clippers import AGC, Clipper, NoClip, NormClip, ValueClip

__all__ = ["CLIPPERS", "get_clipper"]

CLIPPERS: dict[str, type] = {
    "norm": NormClip,
    "value": ValueClip,
    "agc": AGC,
    "autoclip": AutoClip,
    "zclip": ZClip,
    "none": NoClip,
}


def get_clipper(name: str, **params: Any) -> Clipper:
    """Build a clipper from its registry name and keyword arguments.

    Args:
        name: One of ``CLIPPERS`` ("norm", "value", "agc", "autoclip", "zclip", "none");
            case and surrounding spaces are ignored.
        **params: The clipper's constructor arguments (e.g. ``max_norm=1.0``).

    Returns:
        The clipper.

    Raises:
        ValueError: Unknown name (the message suggests the nearest and lists the known
            ones), or a bad argument value.
        TypeError: ``name`` is not a string, or a keyword the clipper does not take (the
            message lists the allowed ones).

    Example:
        >>> get_clipper("norm", max_norm=1.0)
        NormClip(max_norm=1.0, norm_type=2.0)
    """
    return build(CLIPPERS, name, "clipper", params)
