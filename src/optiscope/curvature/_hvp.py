"""Hessian-vector products of a model's loss with ``torch.func``.

``H @ v`` is the vector-Jacobian product of the gradient, ``vjp(grad(loss))(v)``
(reverse-over-reverse). It never materialises ``H``, never calls
``backward(create_graph=True)`` (which leaves the double-backward graph referenced from
``param.grad`` and is how PyHessian leaks memory), and, with ``vmap``, evaluates a block of
vectors at once. Forward-over-reverse (``jvp(grad(loss))``) was measured no faster on CPU
and fails inside ``F.mse_loss``'s backward in torch 2.x ("ZeroTensors are immutable"), so
the reverse form is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vjp, vmap

from optiscope._internal.batches import batch_size, iter_batches
from optiscope._internal.restore import preserved

__all__ = ["HessianOperator", "hvp"]

LossFn = Callable[..., torch.Tensor]
Direction = dict[str, torch.Tensor]


class HessianOperator:
    """The Hessian of a model's mean loss as a linear operator over its trainable parameters.

    The loss is ``loss_fn(model(inputs), targets)`` with mean reduction. Over a DataLoader
    the operator is the Hessian of the loss over the whole data set: each batch's
    Hessian-vector product is weighted by its batch size, so a ragged last batch counts as
    much as it should. The model is evaluated in eval mode (dropout off, BatchNorm on its
    running statistics) through ``torch.func.functional_call``, so its parameters, buffers
    and gradients are never written; its train/eval modes are put back after each product.

    Vectors are flat tensors of length :attr:`numel` in the order of :attr:`names`
    (``matvec``/``matmat``) or dicts keyed by parameter name (``__call__``).

    Args:
        model: The network.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (``loss_fn(outputs)`` when the
            data has no targets).
        data: A tensor of inputs (with ``targets``) or a DataLoader of ``(inputs, targets)``.
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
        ValueError: No trainable parameters, an unknown or frozen name in ``params``, or
            ``max_batches < 1``. A non-scalar loss raises ValueError at the first product.
        TypeError: ``model`` is not an ``nn.Module`` or ``loss_fn`` is not callable.

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
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if max_batches is not None and (
            isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
        ):
            raise ValueError(f"max_batches must be an int >= 1 or None, got {max_batches!r}")
        if isinstance(data, torch.Tensor) and data.numel() == 0:
            raise ValueError("data is empty: expected a tensor with at least one sample")
        all_params = dict(model.named_parameters())
        trainable = [n for n, p in all_params.items() if p.requires_grad]
        if params is None:
            names = trainable
        else:
            if isinstance(params, str):
                params = [params]
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
                "the model has no trainable parameters (requires_grad=True): nothing to "
                "differentiate"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.targets = targets
        self.max_batches = max_batches
        # A single tensor batch is cheap to keep a graph for; a DataLoader may not be.
        self.cache: bool = isinstance(data, torch.Tensor) if cache is None else bool(cache)
        self._cache: list[tuple[Callable, int]] | None = None
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
        return self._products(vector, batched=False)

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H @ v`` for each row of ``vectors`` (shape ``(k, numel)``), vmapped in one pass.

        Raises:
            ValueError: ``vectors`` is not ``(k, numel)`` with ``k >= 1``.
        """
        if vectors.dim() != 2 or vectors.shape[1] != self.numel or vectors.shape[0] < 1:
            raise ValueError(
                f"vectors must have shape (k, {self.numel}) with k >= 1, got {tuple(vectors.shape)}"
            )
        return self._products(vectors, batched=True)

    def _products(self, vectors: torch.Tensor, batched: bool) -> torch.Tensor:
        vectors = vectors.to(device=self.device, dtype=self.dtype)

        def flat(v: torch.Tensor, pullback: Callable) -> torch.Tensor:
            out = pullback(self.unflatten(v))[0]
            return torch.cat([out[k].reshape(-1) for k in self.names])

        total: torch.Tensor | None = None
        count = 0
        for pullback, n in self._pullbacks():
            if batched:
                hv = vmap(partial(flat, pullback=pullback))(vectors)
            else:
                hv = flat(vectors, pullback)
            # Weight by batch size: mean-reduced batch losses -> the data set's mean loss.
            total = hv * n if total is None else total.add_(hv, alpha=n)
            count += n
        if total is None:  # pragma: no cover - iter_batches raises on empty data first
            raise ValueError("data is empty")
        return total.div_(count)

    def _pullbacks(self) -> Iterator[tuple[Callable, int]]:
        """Per batch, the vector-Jacobian product of the gradient (``v -> H_b v``).

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
        kept: list[tuple[Callable, int]] = []
        with _eval_mode(self.model):
            for inputs, targets in self._batches():
                _, pullback = vjp(grad(self._loss_of(fixed, inputs, targets)), primals)
                item = (pullback, batch_size(inputs))
                if self.cache:
                    kept.append(item)
                yield item
        if self.cache:
            self._cache = kept

    def clear_cache(self) -> None:
        """Drop the cached graphs (needed after the model's parameters change)."""
        self._cache = None

    def _loss_of(
        self, fixed: dict[str, torch.Tensor], inputs: Any, targets: Any
    ) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        model, loss_fn = self.model, self.loss_fn

        def loss_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
            state = {**fixed, **p}
            if isinstance(inputs, dict):
                out = functional_call(model, state, (), inputs)
            elif isinstance(inputs, (tuple, list)):
                out = functional_call(model, state, tuple(inputs))
            else:
                out = functional_call(model, state, (inputs,))
            loss = loss_fn(out) if targets is None else loss_fn(out, targets)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss)
                raise ValueError(
                    f"loss_fn must return a scalar tensor (mean reduction), got {shape}"
                )
            return loss

        return loss_of

    def _batches(self) -> Iterator[tuple[Any, Any]]:
        return iter_batches(
            self.data, self.targets, max_batches=self.max_batches, device=self.device
        )


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
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` with mean reduction.
        data: A tensor of inputs (with ``targets``) or a DataLoader of ``(inputs, targets)``.
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
