"""Directions in weight space: dicts mapping a parameter name to a tensor of its shape.

A direction need not cover every parameter: missing names are zero. Random directions
follow Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets", arXiv 1712.09913):
Gaussian, rescaled filter by filter to the norms of the weights, with biases and norm
layers left out, so that plots of networks with different weight scales are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from optiscope._internal.checks import check_choice, check_int, check_seed

__all__ = [
    "Direction",
    "axis_direction",
    "random_direction",
    "random_directions",
    "orthogonalize",
    "find_parameter",
]


class Direction(dict):
    """A ``dict[str, Tensor]`` that also remembers how it was made (``.meta``).

    Any plain dict with matching names and shapes is accepted wherever a direction is.
    """

    def __init__(self, *args, meta: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.meta = dict(meta or {})


_NORMALIZATIONS = ("filter", "layer", "model", "none")
_EPS = 1e-10


def find_parameter(model: nn.Module, param_name: str) -> str:
    """The full name of the parameter ``param_name`` refers to.

    An exact name wins; otherwise the one parameter whose name contains ``param_name``.
    (The guide took the first substring match, so ``"0.weight"`` could pick
    ``"10.weight"``.)

    Args:
        model: The module to search.
        param_name: A full parameter name or an unambiguous part of one.

    Returns:
        The full parameter name.

    Raises:
        ValueError: No parameter, or more than one, matches; the message lists the names.

    Example:
        >>> m = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
        >>> find_parameter(m, "0.weight")
        '0.weight'
    """
    names = [n for n, _ in model.named_parameters()]
    if param_name in names:
        return param_name
    matches = [n for n in names if param_name in n]
    if len(matches) == 1:
        return matches[0]
    what = "matches several parameters" if matches else "matches no parameter"
    raise ValueError(
        f"param_name {param_name!r} {what}; the parameter names are: {', '.join(names)}"
    )


def axis_direction(model: nn.Module, param_name: str, index: int = 0) -> Direction:
    """The unit vector along one coordinate of one parameter (the guide's direction).

    Args:
        model: The module.
        param_name: Parameter name (exact first, else a unique substring).
        index: Index into the flattened parameter, in ``[-numel, numel)``.

    Returns:
        ``{name: tensor}`` with a single 1 at ``index``.

    Raises:
        ValueError: Unknown name or index out of range.

    Example:
        >>> d = axis_direction(nn.Linear(2, 3), "weight", 4)
        >>> d["weight"].flatten().tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    """
    name = find_parameter(model, param_name)
    p = dict(model.named_parameters())[name]
    index = check_int("index", index)
    if not -p.numel() <= index < p.numel():
        raise ValueError(
            f"index {index} is out of range for {name!r} with {p.numel()} elements "
            f"(allowed: {-p.numel()} <= index < {p.numel()})"
        )
    d = torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
    d[int(index)] = 1.0
    return Direction(
        {name: d.view_as(p)}, meta={"kind": "axis", "parameter": name, "index": int(index)}
    )


def _check_normalization(normalization: str, ignore: str | None) -> None:
    check_choice("normalization", normalization, _NORMALIZATIONS)
    if ignore is not None:
        check_choice("ignore", ignore, ("biasbn",))


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    seed = check_seed(seed)
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator if seed is None else torch.Generator().manual_seed(seed)


def _filter_scale(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # One filter = one slice along dim 0 (an output unit of a Linear, an output channel of
    # a conv). A 1-d tensor has one-element filters, so its direction becomes +-|w_i|.
    dims = tuple(range(1, d.dim()))
    if not dims:
        return d.sign() * w.abs()
    wn = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
    dn = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
    return d * (wn / (dn + _EPS))


def random_direction(
    model: nn.Module,
    normalization: str = "filter",
    ignore: str | None = "biasbn",
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Direction:
    """A Gaussian direction, normalised as in Li et al. 2018.

    Args:
        model: The module whose parameters define the names, shapes and norms.
        normalization: ``"filter"`` scales each filter (slice along dim 0) to the norm of
            the same filter of the weights; ``"layer"`` each tensor; ``"model"`` the whole
            vector; ``"none"`` keeps the raw Gaussian.
        ignore: ``"biasbn"`` zeros the direction of 1-d parameters (biases, norm-layer
            affine weights); ``None`` keeps them.
        seed: Seed of a private generator (same seed, same direction on one machine).
        generator: A CPU ``torch.Generator`` to draw from (exclusive with ``seed``); with
            neither, torch's global generator is used.

    Returns:
        ``{name: tensor}`` for every parameter, on the parameter's device and dtype.

    Raises:
        ValueError: Unknown ``normalization``/``ignore``, both ``seed`` and ``generator``,
            or a model without parameters.

    Example:
        >>> m = nn.Linear(3, 2)
        >>> d = random_direction(m, seed=0)
        >>> bool(torch.allclose(d["weight"].norm(dim=1), m.weight.norm(dim=1)))
        True
    """
    _check_normalization(normalization, ignore)
    generator = _generator(seed, generator)
    params = [(n, p.detach()) for n, p in model.named_parameters()]
    if not params:
        raise ValueError("model has no parameters")
    out: Direction = {}
    for name, w in params:
        # Drawn on the CPU so the same seed gives the same direction on any device.
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32)
        d = d.to(device=w.device, dtype=w.dtype)
        if ignore == "biasbn" and w.dim() <= 1:
            d.zero_()
        elif normalization == "filter":
            d = _filter_scale(d, w)
        elif normalization == "layer":
            d = d * (torch.linalg.vector_norm(w) / (torch.linalg.vector_norm(d) + _EPS))
        out[name] = d
    if normalization == "model":
        wn = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(w) for _, w in params]))
        dn = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(d) for d in out.values()])
        )
        out = {n: d * (wn / (dn + _EPS)) for n, d in out.items()}
    meta = {"kind": "random", "normalization": normalization, "ignore": ignore, "seed": seed}
    return Direction(out, meta=meta)


def _dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    terms = [(a[n].double() * b[n].double()).sum() for n in a if n in b]
    return torch.stack(terms).sum() if terms else torch.zeros((), dtype=torch.float64)


def orthogonalize(d1: Mapping[str, torch.Tensor], d2: Mapping[str, torch.Tensor]) -> Direction:
    """``d2`` with its component along ``d1`` removed, rescaled to its original norm.

    Args:
        d1: The reference direction.
        d2: The direction to make orthogonal to ``d1``.

    Returns:
        A new direction with the names of ``d2``, orthogonal to ``d1``.

    Raises:
        ValueError: ``d1`` is zero, or ``d2`` lies along ``d1``.

    Example:
        >>> a = {"w": torch.tensor([1.0, 0.0])}
        >>> orthogonalize(a, {"w": torch.tensor([1.0, 1.0])})["w"].tolist()
        [0.0, 1.4142135381698608]
    """
    n11 = _dot(d1, d1)
    if float(n11) == 0.0:
        raise ValueError("d1 is the zero direction; cannot orthogonalise against it")
    coef = _dot(d1, d2) / n11
    out = {
        n: (t.double() - coef * d1[n].double()).to(t.dtype) if n in d1 else t.clone()
        for n, t in d2.items()
    }
    new = float(_dot(out, out)) ** 0.5
    if new <= 1e-12 * float(_dot(d2, d2)) ** 0.5 or new == 0.0:
        raise ValueError("d2 is parallel to d1; there is no orthogonal part to keep")
    scale = float(_dot(d2, d2)) ** 0.5 / new
    meta = dict(getattr(d2, "meta", {}), orthogonalized=True)
    return Direction({n: t * scale for n, t in out.items()}, meta=meta)


def random_directions(
    model: nn.Module,
    n: int = 2,
    normalization: str = "filter",
    ignore: str | None = "biasbn",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    orthogonal: bool = False,
) -> list[Direction]:
    """``n`` random directions drawn one after another from one generator.

    Args:
        model: The module.
        n: How many directions (>= 1).
        normalization: As in :func:`random_direction`.
        ignore: As in :func:`random_direction`.
        seed: Seed of a private generator.
        generator: A CPU generator (exclusive with ``seed``).
        orthogonal: Make each direction orthogonal to the ones before (Gram-Schmidt in
            the flat parameter space, each keeping its norm). Orthogonality then holds
            exactly, the per-filter norms approximately.

    Returns:
        A list of ``n`` directions.

    Raises:
        TypeError: ``n`` or ``seed`` is not an integer.
        ValueError: ``n < 1`` or bad arguments for :func:`random_direction`.

    Example:
        >>> d1, d2 = random_directions(nn.Linear(4, 4), seed=0, orthogonal=True)
        >>> abs(float(sum((d1[k] * d2[k]).sum() for k in d1))) < 1e-5
        True
    """
    n = check_int("n", n, low=1)
    _check_normalization(normalization, ignore)
    generator = _generator(seed, generator)
    dirs: list[Direction] = []
    for _ in range(n):
        d = random_direction(model, normalization, ignore, generator=generator)
        d.meta.update(seed=seed, index=len(dirs))
        if orthogonal:
            for prev in dirs:
                d = orthogonalize(prev, d)
        dirs.append(d)
    return dirs
