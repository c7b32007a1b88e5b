"""Directions from checkpoints: interpolation between two, and the PCA plane of a path.

Li et al. 2018 (section 7) plot the optimisation path on the plane of the top two
principal directions of ``theta_i - theta_final``, since random directions are nearly
orthogonal to it in high dimension.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from optiscope.landscape._directions import Direction

__all__ = ["interpolation_direction", "pca_directions", "project_trajectory", "PCADirections"]

# State-dict entries that are statistics, not weights: never part of a weight direction.
_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _weights(
    state: Mapping[str, torch.Tensor] | nn.Module, names: Iterable[str] | None
) -> dict[str, torch.Tensor]:
    if isinstance(state, nn.Module):
        items = {n: p.detach() for n, p in state.named_parameters()}
    elif isinstance(state, Mapping):
        items = {
            n: t.detach()
            for n, t in state.items()
            if isinstance(t, torch.Tensor)
            and t.is_floating_point()
            and not n.endswith(_STAT_SUFFIXES)
        }
    else:
        raise TypeError(f"expected a state dict or nn.Module, got {type(state).__name__}")
    if names is not None:
        names = list(names)
        missing = [n for n in names if n not in items]
        if missing:
            raise ValueError(f"names not in the state: {missing}")
        items = {n: items[n] for n in names}
    if not items:
        raise ValueError("the state holds no floating-point weights")
    return items


def _difference(a: dict[str, torch.Tensor], b: Mapping, what: str) -> Direction:
    w = _weights(b, list(a))
    out = {}
    for n, t in a.items():
        if w[n].shape != t.shape:
            raise ValueError(
                f"{what}: {n!r} has shape {tuple(w[n].shape)}, expected {tuple(t.shape)}"
            )
        out[n] = w[n].to(t.device, t.dtype) - t
    return out


def interpolation_direction(
    state_a: Mapping[str, torch.Tensor] | nn.Module,
    state_b: Mapping[str, torch.Tensor] | nn.Module,
    names: Iterable[str] | None = None,
) -> Direction:
    """``theta_b - theta_a``: evaluate ``line`` at ``theta_a`` on ``alpha_range=(0, 1)``.

    Args:
        state_a: The start (a ``state_dict`` or a module).
        state_b: The end, with the same names and shapes.
        names: Which entries to use; default: the floating-point entries, without the
            running statistics of norm layers (``running_mean``, ``running_var``).

    Returns:
        The direction from ``a`` to ``b``.

    Raises:
        ValueError: Names or shapes differ.

    Example:
        >>> a, b = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
        >>> interpolation_direction(a, b)["w"].tolist()
        [1.0, 1.0]
    """
    return Direction(
        _difference(_weights(state_a, names), state_b, "state_b"), meta={"kind": "interpolation"}
    )


class PCADirections(NamedTuple):
    """The result of :func:`pca_directions` (unpacks as ``d1, d2, explained``)."""

    d1: Direction
    d2: Direction
    explained_variance_ratio: np.ndarray


def _flat_deltas(
    final_state: Mapping | nn.Module, trajectory_states: Iterable, names: Iterable[str] | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    final = _weights(final_state, names)
    rows = []
    for i, state in enumerate(trajectory_states):
        diff = _difference(final, state, f"trajectory_states[{i}]")
        rows.append(torch.cat([diff[n].detach().double().flatten().cpu() for n in final]))
    if not rows:
        raise ValueError("trajectory_states is empty")
    return final, torch.stack(rows)


def _unflatten(vec: torch.Tensor, like: dict[str, torch.Tensor], meta: dict) -> Direction:
    out, k = Direction(meta=meta), 0
    for n, t in like.items():
        out[n] = vec[k : k + t.numel()].view(t.shape).to(t.device, t.dtype)
        k += t.numel()
    return out


def pca_directions(
    final_state: Mapping[str, torch.Tensor] | nn.Module,
    trajectory_states: Iterable[Mapping[str, torch.Tensor]],
    names: Iterable[str] | None = None,
) -> PCADirections:
    """The top two principal directions of the training path around the final weights.

    As in Li et al. 2018 (section 7): rows ``theta_i - theta_final``, centred, and their two
    leading right singular vectors (unit norm in the flat parameter space).

    Args:
        final_state: The final weights (``state_dict`` or module).
        trajectory_states: One ``state_dict`` per checkpoint (at least two).
        names: Entries to use; default: floating-point entries without norm statistics.

    Returns:
        ``PCADirections(d1, d2, explained_variance_ratio)``.

    Raises:
        ValueError: Fewer than two states, or names/shapes that differ.

    Example:
        >>> f = {"w": torch.zeros(3)}
        >>> path = [{"w": torch.tensor([float(i), 0.1 * i * i, 0.0])} for i in range(5)]
        >>> d1, d2, ev = pca_directions(f, path)
        >>> round(float(d1["w"].norm()), 6), bool(ev[0] > 0.9)
        (1.0, True)
    """
    final, m = _flat_deltas(final_state, list(trajectory_states), names)
    if m.shape[0] < 2:
        raise ValueError(f"pca_directions needs at least 2 trajectory states, got {m.shape[0]}")
    centred = m - m.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = float(var.sum())
    ratio = (var / total).numpy() if total > 0 else np.zeros(len(var))
    v2 = vh[1] if vh.shape[0] > 1 else torch.zeros_like(vh[0])
    # Fix the sign (largest-magnitude entry positive) so results do not flip between runs.
    v1, v2 = (v * (1.0 if float(v[v.abs().argmax()]) >= 0 else -1.0) for v in (vh[0], v2))
    ev = np.zeros(2)
    ev[: min(2, len(ratio))] = ratio[:2]
    return PCADirections(
        _unflatten(v1, final, {"kind": "pca", "component": 1, "explained": float(ev[0])}),
        _unflatten(v2, final, {"kind": "pca", "component": 2, "explained": float(ev[1])}),
        ev,
    )


def project_trajectory(
    final_state: Mapping[str, torch.Tensor] | nn.Module,
    trajectory_states: Iterable[Mapping[str, torch.Tensor]],
    d1: Mapping[str, torch.Tensor],
    d2: Mapping[str, torch.Tensor],
) -> np.ndarray:
    """Each checkpoint's coordinates ``(alpha, beta)`` on the plane ``final + a d1 + b d2``.

    Least squares: the point of the plane closest to ``theta_i`` (exact projection for
    non-orthogonal directions too).

    Args:
        final_state: The plane's centre.
        trajectory_states: The checkpoints.
        d1: First direction (its names select the entries compared).
        d2: Second direction.

    Returns:
        An array of shape ``(len(trajectory_states), 2)``.

    Raises:
        ValueError: The directions are parallel or zero, or names/shapes differ.

    Example:
        >>> f = {"w": torch.zeros(2)}
        >>> d1, d2 = {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 2.0])}
        >>> project_trajectory(f, [{"w": torch.tensor([3.0, 4.0])}], d1, d2).tolist()
        [[3.0, 2.0]]
    """
    final, m = _flat_deltas(final_state, list(trajectory_states), list(d1))
    basis = []
    for d in (d1, d2):
        missing = [n for n in final if n not in d]
        if missing or len(d) != len(final):
            raise ValueError("d1 and d2 must have the same names")
        basis.append(torch.cat([d[n].detach().double().flatten().cpu() for n in final]))
    a = torch.stack(basis, dim=1)  # (D, 2)
    gram = a.T @ a
    if float(torch.linalg.det(gram)) <= 1e-12 * float(gram.diagonal().prod()):
        raise ValueError("d1 and d2 are parallel or zero; they do not span a plane")
    coords = torch.linalg.solve(gram, a.T @ m.T).T
    return coords.numpy()
