"""Hessian-vector products of a model's loss with ``torch.func``.

``H @ v`` is the vector-Jacobian product of the gradient, ``vjp(grad(loss))(v)``
(reverse-over-reverse). It never materialises ``H``, never calls
``backward(create_graph=True)`` (which leaves the double-backward graph referenced from
``param.grad`` and is how PyHessian leaks memory), and, with ``vmap``, evaluates a block of
vectors at once when the model's activations are small. Forward-over-reverse
(``jvp(grad(loss))``) was measured no faster on CPU and fails inside ``F.mse_loss``'s
backward in torch 2.x ("ZeroTensors are immutable"), so the reverse form is used.

Every evaluation runs under :func:`~optiscope.curvature._kernels.double_backward_kernels`
(the SDPA math backend, the multi-head attention fast path off), so products work through
attention on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import grad, vjp, vmap

from optiscope._internal.batches import walk_batches
from optiscope._internal.checks import check_bool, check_optional_int
from optiscope._internal.restore import preserved
from optiscope.batch_loss import BatchLoss, as_batch_loss
from optiscope.curvature._kernels import double_backward_kernels

__all__ = ["HessianOperator", "hvp"]

LossFn = Callable[..., torch.Tensor] | BatchLoss | None
Direction = dict[str, torch.Tensor]

# Vectors are vmapped together while (vectors x activation elements of one batch) stays
# below this: past it the block no longer fits in cache, and the vmapped double backward
# of a conv net (about 2M activations per layer on CIFAR-sized batches) was measured
# slower per vector than a loop of single products. A fixed rule, never a timing.
VMAP_ELEMENTS = 1 << 22


class HessianOperator:
    """The Hessian of a model's mean loss as a linear operator over its trainable parameters.

    The loss of a batch is what ``loss_fn`` makes of it (see :mod:`optiscope.batch_loss`):
    ``loss_fn(model(inputs), targets)`` for a plain callable, the model's own ``.loss``
    for None, or any :class:`~optiscope.batch_loss.BatchLoss`. Over a DataLoader the
    operator is the Hessian of the loss over the whole data set: each batch's
    Hessian-vector product is weighted by its size (``BatchLoss.size``), so a ragged last
    batch counts as much as it should. The model is evaluated in eval mode (dropout off,
    BatchNorm on its running statistics) through ``BatchLoss.evaluate(model, batch,
    state=...)`` (``torch.func.functional_call``), so its parameters, buffers and
    gradients are never written; its train/eval modes are put back after each product.
    Attention runs on kernels with a double backward (the SDPA math backend, no MHA fast
    path), whatever the caller selected; their choice is restored afterwards.

    Vectors are flat tensors of length :attr:`numel` in the order of :attr:`names`
    (``matvec``/``matmat``) or dicts keyed by parameter name (``__call__``).

    Args:
        model: The network.
        loss_fn: ``loss_fn(output, target) -> scalar`` (``loss_fn(output)`` when the
            data has no targets), a :class:`~optiscope.batch_loss.BatchLoss`, or None
            when the model returns its own loss (``.loss`` or ``["loss"]``).
        data: A tensor of inputs (with ``targets``) or an iterable (DataLoader, list) of
            batches in any layout ``loss_fn`` understands (``(x, y)``, ``(x1, x2, y)``,
            dicts).
        targets: Labels for tensor ``data``; None for a DataLoader.
        params: Names of the parameters to differentiate with respect to (the others are
            held fixed); None for every parameter with ``requires_grad``.
        max_batches: Use only the first this-many batches of a DataLoader.
        cache: Keep each batch's graph after the first product so later products only run
            the double backward (about 2x faster, memory of one forward+backward graph per
            batch). None: cache for tensor ``data``, recompute for a DataLoader. A cached
            operator reflects the parameters at its first product; see
            :meth:`clear_cache`.

    Raises:
        ValueError: No trainable parameters, an unknown or frozen name in ``params``,
            ``max_batches < 1`` or empty tensor data. A non-scalar loss raises ValueError
            at the first product.
        TypeError: ``model`` is not an ``nn.Module``, ``loss_fn`` is none of the above,
            ``max_batches`` is not an int, ``params`` is not a list of names or ``cache``
            not a bool.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> X, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> H = HessianOperator(model, torch.nn.functional.mse_loss, X, y)
        >>> H.numel, H.matvec(torch.ones(H.numel)).shape
        (4, torch.Size([4]))
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: torch.Tensor | Iterable,
        targets: torch.Tensor | None = None,
        *,
        params: Sequence[str] | None = None,
        max_batches: int | None = None,
        cache: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.batch_loss: BatchLoss = as_batch_loss(loss_fn)
        max_batches = check_optional_int("max_batches", max_batches, low=1)
        if cache is not None:
            check_bool("cache", cache)
        if isinstance(data, torch.Tensor) and data.numel() == 0:
            raise ValueError("data is empty: expected a tensor with at least one sample")
        names = _param_names(model, params)
        all_params = dict(model.named_parameters())
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.targets = targets
        self.max_batches = max_batches
        # A single tensor batch is cheap to keep a graph for; a DataLoader may not be.
        self.cache: bool = isinstance(data, torch.Tensor) if cache is None else cache
        self._cache: list[tuple[Callable, int, int]] | None = None
        self.names: list[str] = names
        self.shapes: list[torch.Size] = [all_params[n].shape for n in names]
        self.sizes: list[int] = [all_params[n].numel() for n in names]
        self.numel: int = sum(self.sizes)
        first = all_params[names[0]]
        self.dtype: torch.dtype = first.dtype
        self.device: torch.device = first.device

    # --- conversions ---------------------------------------------------------------
    def flatten(self, direction: Direction) -> torch.Tensor:
        """Concatenate a dict of per-parameter tensors into one flat vector (operator order).

        Raises:
            ValueError: A name is missing or a tensor has the wrong number of elements.
        """
        missing = [n for n in self.names if n not in direction]
        if missing:
            raise ValueError(f"direction is missing parameters {missing}")
        parts = []
        for n, size in zip(self.names, self.sizes):
            t = direction[n]
            if t.numel() != size:
                raise ValueError(f"direction[{n!r}] has {t.numel()} elements, expected {size}")
            parts.append(t.reshape(-1).to(device=self.device, dtype=self.dtype))
        return torch.cat(parts)

    def unflatten(self, vector: torch.Tensor) -> Direction:
        """Split a flat vector (last dim :attr:`numel`) into a dict shaped like the params."""
        chunks = vector.split(self.sizes, dim=-1)
        lead = vector.shape[:-1]
        return {n: c.reshape(*lead, *s) for n, c, s in zip(self.names, chunks, self.shapes)}

    # --- products ------------------------------------------------------------------
    def __call__(self, direction: Direction) -> Direction:
        """``H @ v`` for ``v`` given as a dict keyed by parameter name."""
        return self.unflatten(self.matvec(self.flatten(direction)))

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``H @ v`` for a flat vector ``v`` of length :attr:`numel`.

        Raises:
            ValueError: ``vector`` has the wrong shape, or the loss is not a scalar.
        """
        if vector.shape != (self.numel,):
            raise ValueError(f"vector must have shape ({self.numel},), got {tuple(vector.shape)}")
        return self._products(vector[None])[0]

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H @ v`` for each row of ``vectors`` (shape ``(k, numel)``) in one pass over the data.

        Rows are vmapped together in blocks while a block's activations stay small
        (:data:`VMAP_ELEMENTS`), one product at a time past that (large conv nets), so
        the result never depends on timing.

        Raises:
            ValueError: ``vectors`` is not ``(k, numel)`` with ``k >= 1``.
        """
        if vectors.dim() != 2 or vectors.shape[1] != self.numel or vectors.shape[0] < 1:
            raise ValueError(
                f"vectors must have shape (k, {self.numel}) with k >= 1, got {tuple(vectors.shape)}"
            )
        return self._products(vectors)

    def _products(self, vectors: torch.Tensor) -> torch.Tensor:
        vectors = vectors.to(device=self.device, dtype=self.dtype)

        def flat(v: torch.Tensor, pullback: Callable) -> torch.Tensor:
            out = pullback(self.unflatten(v))[0]
            return torch.cat([out[k].reshape(-1) for k in self.names])

        total: torch.Tensor | None = None
        count = 0
        with double_backward_kernels():
            for pullback, n, activations in self._pullbacks():
                block = max(1, VMAP_ELEMENTS // max(activations, 1))
                parts = []
                for chunk in vectors.split(block):
                    if chunk.shape[0] == 1:
                        parts.append(flat(chunk[0], pullback)[None])
                    else:
                        parts.append(vmap(partial(flat, pullback=pullback))(chunk))
                hv = parts[0] if len(parts) == 1 else torch.cat(parts)
                # Weight by batch size: mean-reduced batch losses -> the data set's mean.
                total = hv * n if total is None else total.add_(hv, alpha=n)
                count += n
        if total is None:  # pragma: no cover - walk_batches raises on empty data first
            raise ValueError("data is empty")
        return total.div_(count)

    def _pullbacks(self) -> Iterator[tuple[Callable, int, int]]:
        """Per batch: the vector-Jacobian product of the gradient (``v -> H_b v``), the
        batch's size and the number of elements its modules output (for block sizes).

        Reverse-over-reverse through ``torch.func.vjp`` of ``torch.func.grad``: the graph
        lives in the returned closure only, never on the module or in ``.grad``. With
        ``cache`` the closures are kept, so later products skip the forward and first
        backward (what PyHessian gets from ``create_graph=True``, without the leak).
        """
        if self._cache is not None:
            yield from self._cache
            return
        all_params = dict(self.model.named_parameters())
        primals = {n: all_params[n].detach() for n in self.names}
        # Everything not differentiated goes in detached, so no other graph is built.
        fixed: dict[str, torch.Tensor] = {
            n: p.detach() for n, p in all_params.items() if n not in primals
        }
        fixed.update({n: b.detach() for n, b in self.model.named_buffers()})
        kept: list[tuple[Callable, int, int]] = []
        with _eval_mode(self.model):
            for batch in self._batches():
                with _count_activations(self.model) as counter:
                    _, pullback = vjp(grad(self._loss_of(fixed, batch)), primals)
                item = (pullback, self.batch_loss.size(batch), counter[0])
                if self.cache:
                    kept.append(item)
                yield item
        if self.cache:
            self._cache = kept

    def clear_cache(self) -> None:
        """Drop the cached graphs (needed after the model's parameters change)."""
        self._cache = None

    def _loss_of(
        self, fixed: dict[str, torch.Tensor], batch: Any
    ) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        model, batch_loss = self.model, self.batch_loss

        def loss_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return batch_loss.evaluate(model, batch, state={**fixed, **p}).loss

        return loss_of

    def _batches(self) -> Iterator[Any]:
        return walk_batches(
            self.data, self.targets, max_batches=self.max_batches, device=self.device
        )


def _param_names(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    all_params = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in all_params.items() if p.requires_grad]
    else:
        if isinstance(params, str):
            params = [params]
        if not isinstance(params, Iterable) or not all(isinstance(n, str) for n in params):
            raise TypeError(f"params must be a list of parameter names or None, got {params!r}")
        names = list(dict.fromkeys(params))
        unknown = [n for n in names if n not in all_params]
        if unknown:
            raise ValueError(
                f"params {unknown} are not parameters of the model; known: {list(all_params)}"
            )
        frozen = [n for n in names if not all_params[n].requires_grad]
        if frozen:
            raise ValueError(f"params {frozen} have requires_grad=False")
    if not names:
        raise ValueError(
            "the model has no trainable parameters (requires_grad=True): nothing to differentiate"
        )
    return names


@contextmanager
def _count_activations(model: nn.Module) -> Iterator[list[int]]:
    """Sum the elements of every leaf module's tensor outputs while the block runs."""
    counter = [0]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        items = output if isinstance(output, (tuple, list)) else (output,)
        counter[0] += sum(t.numel() for t in items if isinstance(t, torch.Tensor))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Iterable,
    targets: torch.Tensor | None = None,
    *,
    vector: Direction,
    params: Sequence[str] | None = None,
    max_batches: int | None = None,
) -> Direction:
    """The Hessian-vector product ``H @ v`` of the mean loss, ``v`` keyed by parameter name.

    Args:
        model: The network (restored bit-for-bit afterwards, also on error).
        loss_fn: ``loss_fn(output, target) -> scalar`` (mean reduction), a
            :class:`~optiscope.batch_loss.BatchLoss`, or None when the model returns its
            own loss (``.loss`` or ``["loss"]``).
        data: A tensor of inputs (with ``targets``) or an iterable (DataLoader, list) of
            batches in any layout ``loss_fn`` understands (``(x, y)``, ``(x1, x2, y)``,
            dicts); batches are weighted by their size.
        targets: Labels for tensor ``data``; None for a DataLoader.
        vector: ``v`` as a dict of tensors shaped like the trainable parameters.
        params: Differentiate only with respect to these parameter names (``vector`` then
            needs only those keys); None for every parameter with ``requires_grad``.
        max_batches: Use only the first this-many batches of a DataLoader.

    Returns:
        ``H @ v`` as a dict with the same keys and shapes as the trainable parameters.

    Raises:
        ValueError: No trainable parameters, a non-scalar loss, empty data, or a vector
            with missing names or wrong sizes.
        TypeError: ``model``, ``loss_fn``, ``params`` or ``max_batches`` of the wrong kind.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> v = {"weight": torch.ones(1, 2)}
        >>> hvp(model, torch.nn.functional.mse_loss, X, y, vector=v)["weight"]
        tensor([[1., 4.]])
    """
    op = HessianOperator(model, loss_fn, data, targets, params=params, max_batches=max_batches)
    with preserved(model):
        return op(vector)
