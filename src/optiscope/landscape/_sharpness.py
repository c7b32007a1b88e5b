"""Sharpness along the computed directions: quadratic-fit curvature and the worst rise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optiscope.landscape._result import Landscape

__all__ = ["Sharpness", "sharpness"]


@dataclass(frozen=True)
class Sharpness:
    """Summary of how fast the metric rises around the centre.

    Attributes:
        curvature: Second derivatives at the centre from a least-squares quadratic fit:
            ``(f'',)`` for a line, ``(f_aa, f_bb)`` for a plane.
        hessian: The fitted 2x2 Hessian of a plane (None for a line).
        centre_value: The metric at the grid point nearest the centre.
        max_increase: Largest ``value - centre_value`` within ``radius``.
        radius: The radius used (in grid coordinates).
    """

    curvature: tuple[float, ...]
    hessian: np.ndarray | None
    centre_value: float
    max_increase: float
    radius: float


def sharpness(ls: Landscape, metric: str = "loss", radius: float | None = None) -> Sharpness:
    """Curvature at the centre (quadratic fit) and the largest increase within a radius.

    The fit uses the grid points within ``radius`` of the centre (the full grid when
    ``radius`` is None) and the model ``c + g.x + x^T H x / 2``. Values are in units of the
    directions: with filter-normalised directions they are comparable between networks.

    Args:
        ls: A line or plane containing ``(0, 0)`` in its range.
        metric: Which metric.
        radius: Neighbourhood radius (> 0); default: the largest that fits in the grid.

    Returns:
        A :class:`Sharpness`.

    Raises:
        ValueError: Unknown metric, bad radius, the centre outside the grid, or too few
            points within the radius for the fit.

    Example:
        >>> a = np.linspace(-1, 1, 21)
        >>> s = sharpness(Landscape(a, None, {"loss": 3 * a**2 + 1}))
        >>> round(s.curvature[0], 6), round(s.max_increase, 6)
        (6.0, 3.0)
    """
    if metric not in ls.values:
        raise ValueError(f"metric {metric!r} not in the landscape; it has {list(ls.values)}")
    axes = [ls.alphas] + ([ls.betas] if ls.is_2d else [])
    for a in axes:
        if not a.min() <= 0.0 <= a.max():
            raise ValueError("the grid does not contain the centre (0, 0)")
    if radius is None:
        radius = min(min(-a.min(), a.max()) for a in axes)
        radius = radius if radius > 0 else max(max(-a.min(), a.max()) for a in axes)
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    v = ls.values[metric]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    vals = v.reshape(-1)
    dist = np.linalg.norm(pts, axis=1)
    near = dist <= radius * (1 + 1e-9)
    centre = float(vals[np.argmin(dist)])
    x, f = pts[near], vals[near]
    if len(axes) == 1:
        design = np.stack([np.ones(len(x)), x[:, 0], 0.5 * x[:, 0] ** 2], axis=1)
    else:
        a, b = x[:, 0], x[:, 1]
        design = np.stack([np.ones(len(x)), a, b, 0.5 * a**2, a * b, 0.5 * b**2], axis=1)
    if len(x) < design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(f"too few grid points within radius {radius} for a quadratic fit")
    coef, *_ = np.linalg.lstsq(design, f, rcond=None)
    if len(axes) == 1:
        curv, hess = (float(coef[2]),), None
    else:
        hess = np.array([[coef[3], coef[4]], [coef[4], coef[5]]])
        curv = (float(coef[3]), float(coef[5]))
    return Sharpness(curv, hess, centre, float(np.max(f) - centre), float(radius))
