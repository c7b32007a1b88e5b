"""Write a :class:`~optiscope.app.config.RunConfig` back as TOML (tomllib only reads)."""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optiscope.app.config import RunConfig

__all__ = ["config_to_toml"]


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON strings are TOML basic strings once DEL, which TOML wants escaped, is.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write a {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _toml_value(k)


def config_to_toml(cfg: RunConfig) -> str:
    """The full config (defaults included) as TOML text that :func:`parse_config` reads back.

    Example:
        >>> from optiscope.app.config import parse_config
        >>> cfg = parse_config('[train]\\nepochs = 3')
        >>> parse_config(config_to_toml(cfg)).train.epochs
        3
    """
    lines: list[str] = []
    for name, table in cfg.to_dict().items():
        lines.append(f"[{name}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)
