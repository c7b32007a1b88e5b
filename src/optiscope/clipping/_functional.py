"""Clip functions: by value, by global norm (the guide's two, fixed) and unit-wise AGC.

All three work on the whole parameter list at once with torch's foreach kernels, never a
Python loop of small per-tensor ops, and none copies a value to the host: the pre-clip
norm comes back as a 0-d tensor on the gradients' device, and the decision to scale is a
multiplication by ``min(1, coef)`` rather than an ``if`` (which would synchronise on a GPU).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch

from optiscope._internal.checks import check_norm_type, check_positive
from optiscope.clipping import _checks

TensorOrTensors = torch.Tensor | Iterable[torch.Tensor]

# Same constant as torch, so our coefficients match torch's bit for bit; the one epsilon
# of the clipping package (clippers and ZClip's z-score import it).
EPS = 1e-6
_LOW_PRECISION = frozenset((torch.float16, torch.bfloat16))

__all__ = ["adaptive_clip_grad_", "clip_grad_norm_", "clip_grad_value_"]


def _norm_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """float64 if any tensor is float64, else float32: fp16/bf16 norms overflow and lose bits."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _foreach_ok(device: torch.device, foreach: bool | None) -> bool:
    if foreach is False:
        return False
    supported = device.type in ("cpu", "cuda", "xpu", "mps") or device.type == (
        torch._C._get_privateuse1_backend_name()
    )
    if foreach and not supported:
        raise RuntimeError(
            f"foreach=True was passed, but can't use the foreach API on {device.type} tensors"
        )
    return supported


def per_tensor_norms(
    tensors: list[torch.Tensor], norm_type: float, foreach: bool | None = None
) -> list[torch.Tensor]:
    """The p-norm of each tensor (float32 or float64), one foreach call per device.

    Low-precision tensors are reduced in float32 (``dtype=`` of the kernel), so a bf16/fp16
    gradient whose squares overflow still gets a finite norm.
    """
    dtype = _norm_dtype(tensors)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    # Foreach kernels want one device and one dtype per call (like torch's own grouping).
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    for (device, _), idx in groups.items():
        group = [tensors[i] for i in idx]
        if _foreach_ok(device, foreach):
            norms = torch._foreach_norm(group, norm_type, dtype=dtype)
        else:
            norms = [torch.linalg.vector_norm(t, norm_type, dtype=dtype) for t in group]
        for i, n in zip(idx, norms):
            out[i] = n
    return out  # type: ignore[return-value]


def total_norm(
    grads: list[torch.Tensor],
    norm_type: float,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> torch.Tensor:
    """The p-norm of all ``grads`` viewed as one vector, as a 0-d tensor (no host sync).

    float32/float64 gradients go through ``torch.nn.utils.get_total_norm`` itself, so the
    value is torch's to the bit; fp16/bf16 ones are reduced in float32.
    """
    if not grads:
        return torch.tensor(0.0)
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None and _LOW_PRECISION.isdisjoint({g.dtype for g in grads}):
        return get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    first = grads[0].device
    norms = per_tensor_norms(grads, norm_type, foreach)
    result = torch.linalg.vector_norm(torch.stack([n.to(first) for n in norms]), norm_type)
    if error_if_nonfinite and not torch.isfinite(result):  # syncs, as documented
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    return result


try:  # torch's own C++ grouping (what clip_grad_norm_ uses); private, so guarded
    from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype
except ImportError:  # pragma: no cover - older or future torch
    _group_tensors_by_device_and_dtype = None


def group_by_device_and_dtype(
    tensors: list[torch.Tensor],
) -> dict[tuple[torch.device, torch.dtype], list[torch.Tensor]]:
    """``tensors`` grouped for foreach kernels (one device and dtype per group)."""
    if _group_tensors_by_device_and_dtype is not None:
        grouped = _group_tensors_by_device_and_dtype([tensors])
        return {key: lists[0] for key, (lists, _) in grouped.items()}
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def scale_(grads: list[torch.Tensor], coef: torch.Tensor, foreach: bool | None = None) -> None:
    """Multiply every gradient in place by the 0-d tensor ``coef`` (one kernel per group)."""
    for (device, _), group in group_by_device_and_dtype(grads).items():
        c = coef.to(device)
        if _foreach_ok(device, foreach):
            torch._foreach_mul_(group, c)
        else:
            for g in group:
                g.mul_(c)


@torch.no_grad()
def clip_grad_norm_(
    parameters: TensorOrTensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> torch.Tensor:
    r"""Scale all gradients down together so that their global norm is at most ``max_norm``.

    .. math:: g \leftarrow g \cdot \min\left(1, \frac{\text{max\_norm}}{\lVert g \rVert_p
              + 10^{-6}}\right)

    Same interface and, for float32/float64 gradients, the same bits as
    ``torch.nn.utils.clip_grad_norm_`` (``get_total_norm``, then the coefficient and foreach
    multiply of ``clip_grads_with_norm_``). fp16/bf16 gradients (unscaled, after
    ``GradScaler.unscale_``) get their norm computed in float32. No host sync unless
    ``error_if_nonfinite=True``.

    Args:
        parameters: A tensor or an iterable of tensors; those without ``.grad`` are skipped.
        max_norm: Largest allowed global norm, in ``(0, inf]`` (``inf`` only measures).
        norm_type: Order ``p`` of the norm, in ``(0, inf]`` (``inf``: largest magnitude).
        error_if_nonfinite: Raise RuntimeError when the norm is NaN or infinite (this check
            is the one place that synchronises with the host).
        foreach: Use the foreach kernels (None: wherever the device supports them).

    Returns:
        The pre-clip global norm as a 0-d tensor (``tensor(0.)`` when there are no
        gradients, like torch).

    Raises:
        ValueError: ``max_norm`` or ``norm_type`` outside ``(0, inf]`` or NaN.
        TypeError: ``parameters`` is not a tensor or an iterable of tensors.
        RuntimeError: Non-finite norm with ``error_if_nonfinite=True``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> clip_grad_norm_([w], max_norm=1.0)
        tensor(5.)
        >>> w.grad
        tensor([0.6000, 0.8000])
    """
    max_norm = check_positive("max_norm", max_norm)
    p = check_norm_type(norm_type)
    grads = _checks.grads_from(parameters)
    norm = total_norm(grads, p, error_if_nonfinite, foreach)
    if grads and not math.isinf(max_norm):  # inf only measures: skip the multiply by 1
        # torch's clip_grads_with_norm_ maths (same ops, same bits) on the gradients we
        # already hold, instead of letting it collect them from the parameters again.
        scale_(grads, torch.clamp(max_norm / (norm + EPS), max=1.0), foreach)
    return norm


@torch.no_grad()
def clip_grad_value_(
    parameters: TensorOrTensors, clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place.

    The guide's function with torch's interface and results; it delegates to
    ``torch.nn.utils.clip_grad_value_`` (two foreach kernels per device, no host sync).

    Args:
        parameters: A tensor or an iterable of tensors; those without ``.grad`` are skipped.
        clip_value: Largest allowed magnitude, in ``(0, inf]``.
        foreach: Use the foreach kernels (None: wherever the device supports them).

    Returns:
        None, like torch.

    Raises:
        ValueError: ``clip_value`` outside ``(0, inf]`` or NaN.
        TypeError: ``parameters`` is not a tensor or an iterable of tensors.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(3)); w.grad = torch.tensor([-2.0, 0.1, 3.0])
        >>> clip_grad_value_([w], clip_value=0.5)
        >>> w.grad
        tensor([-0.5000,  0.1000,  0.5000])
    """
    clip_value = check_positive("clip_value", clip_value)
    params = _checks.as_tensor_list(parameters)
    torch.nn.utils.clip_grad_value_(params, clip_value, foreach=foreach)


@functools.lru_cache(maxsize=32)
def _shape_groups(
    layout: tuple[tuple[tuple[int, ...], torch.dtype], ...],
) -> tuple[tuple[tuple[int, int], tuple[int, ...]], ...]:
    """Tensor indices grouped by (shape, dtype) with their ``(units, unit length)``.

    A tensor with more than one dimension has ``shape[0]`` units (rows, output channels)
    of ``numel / shape[0]`` elements; any other tensor is one unit. Tensors of one shape
    are stacked, so a model costs a few kernels per distinct shape (a handful: layers
    repeat) instead of several per tensor, and no Python op per tensor. Cached per model.
    """
    groups: dict[tuple[tuple[int, ...], torch.dtype], list[int]] = {}
    for i, key in enumerate(layout):
        groups.setdefault(key, []).append(i)
    out = []
    for (shape, _), idx in groups.items():
        numel = math.prod(shape)
        u = shape[0] if len(shape) > 1 else 1
        out.append(((u, numel // u), tuple(idx)))
    return tuple(out)


def _unit_norms(
    tensors: list[torch.Tensor], units: tuple[int, int], norm_type: float, dtype: torch.dtype
) -> torch.Tensor:
    """``(n, units)`` norms of the units of ``n`` same-shape tensors: one stack, one reduction."""
    u, k = units
    stacked = torch.stack(tensors).to(dtype).view(len(tensors), u, k)
    return torch.linalg.vector_norm(stacked, norm_type, dim=2)


def agc_(
    params: list[torch.Tensor],
    clip_factor: float,
    eps: float,
    norm_type: float,
    *,
    skip_nonfinite: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-wise AGC in place; returns (pre-clip norm, post-clip norm, whether any unit clipped).

    With ``skip_nonfinite`` the gradients are left untouched when their global norm is
    NaN/inf (what the clippers do); without it the maths runs as timm's does.
    """
    pairs = [(p, p.grad) for p in params if p.grad is not None and p.numel() > 0]
    if not pairs:
        zero = torch.tensor(0.0)
        return zero, zero.clone(), torch.tensor(False)
    first = pairs[0][1].device
    by_dev: dict[torch.device, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for p, g in pairs:
        by_dev.setdefault(g.device, []).append((p, g))
    # Pass 1: every unit norm (gradients and weights), grouped by device and shape.
    work = []
    for group in by_dev.values():
        ws, gs = [p for p, _ in group], [g for _, g in group]
        dtype = _norm_dtype(gs)
        for units, idx in _shape_groups(tuple((tuple(g.shape), g.dtype) for g in gs)):
            g_sel, w_sel = [gs[i] for i in idx], [ws[i] for i in idx]
            g_norm = _unit_norms(g_sel, units, norm_type, dtype)
            w_norm = _unit_norms(w_sel, units, norm_type, dtype)
            work.append((g_sel, g_norm, w_norm))
    before = torch.cat([g_norm.reshape(-1).to(first) for _, g_norm, _ in work])
    pre = torch.linalg.vector_norm(before, norm_type)
    finite = torch.isfinite(pre) if skip_nonfinite else None
    # Pass 2: scale each unit in place (a foreach multiply by per-unit factors).
    after = []
    for g_sel, g_norm, w_norm in work:
        max_norm = w_norm.clamp_(min=eps).mul_(clip_factor)
        # timm's rule: keep a unit whose norm is below its limit, else rescale it to it.
        scale = torch.where(g_norm < max_norm, 1.0, max_norm / g_norm.clamp(min=EPS))
        if finite is not None:
            scale = torch.where(finite.to(scale.device), scale, 1.0)
        shape = g_sel[0].shape
        trailing = (1,) * (len(shape) - 1) if len(shape) > 1 else ()
        factors = scale.to(g_sel[0].dtype).view(len(g_sel), -1, *trailing)
        if len(shape) <= 1:
            factors = factors.view(len(g_sel))
        torch._foreach_mul_(g_sel, factors.unbind(0))
        after.append((g_norm * scale).reshape(-1).to(first))
    after_t = torch.cat(after)
    return pre, torch.linalg.vector_norm(after_t, norm_type), (after_t < before).any()


@torch.no_grad()
def adaptive_clip_grad_(
    parameters: TensorOrTensors,
    clip_factor: float = 0.01,
    eps: float = 1e-3,
    norm_type: float = 2.0,
) -> torch.Tensor:
    r"""Adaptive Gradient Clipping, unit-wise (Brock et al. 2021, NFNets), in place.

    For every unit (each slice along dim 0 of a tensor with more than one dimension, the
    whole tensor otherwise) with weights :math:`W_u` and gradient :math:`G_u`:

    .. math:: G_u \leftarrow G_u \cdot \frac{\lambda \max(\lVert W_u\rVert, \epsilon)}
              {\max(\lVert G_u\rVert, 10^{-6})}
              \quad\text{if}\quad \lVert G_u\rVert \ge \lambda \max(\lVert W_u\rVert,
              \epsilon)

    Same maths as timm's ``adaptive_clip_grad``, but batched: tensors of the same shape
    are stacked, so there is one unit-norm kernel for their gradients, one for their
    weights and one multiply per distinct shape (a handful per model, since layers
    repeat), then one foreach copy back; no Python op per tensor and no host sync. The
    paper leaves the final classifier layer out: pass the parameters without it. Memory:
    a temporary copy of the gradients and weights of one shape group at a time.

    Args:
        parameters: A tensor or an iterable of tensors; those without ``.grad`` are skipped.
        clip_factor: :math:`\lambda`, the largest allowed ratio of gradient to weight norm,
            in ``(0, inf)``.
        eps: Floor on the weight norm so zero-initialised units can still move, in
            ``(0, inf)``.
        norm_type: Order ``p`` of the unit norms, in ``(0, inf]``.

    Returns:
        The pre-clip global gradient norm (p-norm over all gradients) as a 0-d tensor.

    Raises:
        ValueError: ``clip_factor``, ``eps`` or ``norm_type`` out of range or NaN.
        TypeError: ``parameters`` is not a tensor or an iterable of tensors.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2, 2)); w.grad = torch.ones(2, 2)
        >>> round(float(adaptive_clip_grad_([w], clip_factor=0.1)), 4)
        2.0
        >>> w.grad  # each row rescaled to 0.1 * ||row of w|| = 0.1 * sqrt(2)
        tensor([[0.1000, 0.1000],
                [0.1000, 0.1000]])
    """
    clip_factor = check_positive("clip_factor", clip_factor, allow_inf=False)
    eps = check_positive("eps", eps, allow_inf=False)
    p = check_norm_type(norm_type)
    params = _checks.as_tensor_list(parameters)
    pre, _, _ = agc_(params, clip_factor, eps, p, skip_nonfinite=False)
    return pre
