"""Cockpit's per-sample gradient tests from ``torch.func`` per-sample gradients.

With per-sample gradients ``g_i`` (of the mean-reduced loss on sample ``i`` alone) of a
batch of ``B`` samples and their mean ``G``, Cockpit (Schneider et al. 2021) tracks

- the norm test (Byrd et al. 2012), the largest ``theta`` it passes:
  ``sqrt(sum_i |g_i - G|^2 / (B - 1) / B / |G|^2)``;
- the inner-product test (Bollapragada et al. 2018):
  ``sqrt(sum_i (g_i.G - |G|^2)^2 / (B - 1) / B / |G|^4)``;
- the orthogonality test (same paper):
  ``sqrt(sum_i |g_i - (g_i.G / |G|^2) G|^2 / (B - 1) / B / |G|^2)``;
- the mean gradient signal-to-noise ratio (Liu et al. 2020) over all coordinates:
  ``mean_j G_j^2 / (mean_i g_ij^2 - G_j^2 + eps)`` with Cockpit's ``eps = 1e-5``;
- the evidence-based early-stopping criterion (Mahsereci et al. 2017, Eq. 7):
  ``1 - B mean_j G_j^2 / (s_j^2 + eps)`` with ``s_j^2 = (sum_i g_ij^2 - B G_j^2) / (B - 1)``
  the per-coordinate sample variance; above 0, the gradient is no longer told apart from
  its noise and training should stop;
- with ``lr``, CABS (Balles et al. 2017, Eq. 22), the batch size that couples to the
  learning rate: ``lr (mean_i |g_i|^2 - |G|^2) / L`` with ``L`` the mean per-sample loss.

These are Cockpit's formulas exactly (``cockpit/quantities/{norm,inner,ortho}_test.py``,
``mean_gsnr.py``, ``early_stopping.py``, ``cabs.py``), written in per-sample gradients
instead of BackPACK's ``1/B``-scaled ones. The last two are derived for plain SGD (which
Cockpit insists on); optiscope reports them for any optimizer and leaves the reading to
the user. Cost: one ``vmap(grad)`` over the probe batch, i.e. about one forward and backward
of the batch, plus memory for ``B x`` the number of parameters (``vmap`` runs over
chunks of ``chunk_size`` samples, which bounds its activations, not the gradients kept).
Per-sample gradients need independent samples, so the caller evaluates in eval mode
(BatchNorm on its running statistics, dropout off).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import grad_and_value, vmap

from optiscope.batch_loss import BatchLoss
from optiscope.curvature._kernels import double_backward_kernels

__all__ = [
    "GRAD_TESTS",
    "gradient_tests",
    "has_fused_rnn",
    "per_sample_gradients",
    "sample_loss",
    "tests_from_gradients",
]

GRAD_TESTS = ("norm_test", "inner_product_test", "orthogonality_test", "gsnr", "early_stopping")
GSNR_EPS = 1e-5  # Cockpit's MeanGSNR default


def _unsqueeze(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.unsqueeze(0)
    if isinstance(batch, Mapping):
        return type(batch)({k: _unsqueeze(v) for k, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        return type(batch)(_unsqueeze(v) for v in batch)
    return batch


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return type(batch)({k: _slice(v, start, stop) for k, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        return type(batch)(_slice(v, start, stop) for v in batch)
    return batch


def _index(batch: Any, i: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[i]
    if isinstance(batch, Mapping):
        return type(batch)({k: _index(v, i) for k, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        return type(batch)(_index(v, i) for v in batch)
    return batch


def sample_loss(
    model: nn.Module, batch_loss: BatchLoss, names: list[str]
) -> Callable[[dict[str, torch.Tensor], Any], torch.Tensor]:
    """``loss(weights, sample)``: the loss of one sample (unbatched) with ``weights`` (name
    -> tensor) for the parameters ``names`` and the model's own detached values for its
    other parameters and buffers; for ``torch.func`` transforms. The model's state is
    read, not written."""
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    fixed.update({n: b.detach() for n, b in model.named_buffers()})

    def loss(weights: dict[str, torch.Tensor], sample: Any) -> torch.Tensor:
        return batch_loss.evaluate(model, _unsqueeze(sample), state={**fixed, **weights}).loss

    return loss


def has_fused_rnn(model: nn.Module) -> bool:
    """Whether ``model`` holds torch's fused RNN kernels (LSTM, GRU), which have no
    ``vmap`` rule: per-sample work on it runs one sample at a time."""
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


def per_sample_gradients(
    model: nn.Module,
    batch_loss: BatchLoss,
    batch: Any,
    names: list[str],
    chunk_size: int | None = None,
):
    """Yield ``(gradients, losses)`` per chunk: ``(B_chunk, numel)`` flat per-sample
    gradients of the loss and the ``(B_chunk,)`` per-sample losses.

    The model must already be in the mode to evaluate in; its state is read, not written.
    """
    params = dict(model.named_parameters())
    primals = {n: params[n].detach() for n in names}
    loss_one = sample_loss(model, batch_loss, names)

    def flat_grad(sample: Any) -> tuple[torch.Tensor, torch.Tensor]:
        g, loss = grad_and_value(loss_one)(primals, sample)
        return torch.cat([g[n].reshape(-1) for n in names]), loss.detach()

    size = batch_loss.size(batch)
    step = size if chunk_size is None else chunk_size
    looped = has_fused_rnn(model)
    with double_backward_kernels():  # no MHA fast path (no vmap rule) in eval mode
        for start in range(0, size, step):
            chunk = _slice(batch, start, min(size, start + step))
            if looped:
                n = min(size, start + step) - start
                pairs = [flat_grad(_index(chunk, i)) for i in range(n)]
                yield torch.stack([g for g, _ in pairs]), torch.stack([v for _, v in pairs])
            else:
                yield vmap(flat_grad)(chunk)


def gradient_tests(
    model: nn.Module,
    batch_loss: BatchLoss,
    batch: Any,
    names: list[str] | None = None,
    chunk_size: int | None = None,
    lr: float | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Cockpit's norm, inner-product and orthogonality tests, mean GSNR, early-stopping
    criterion and (given ``lr``) CABS batch size on ``batch``.

    Args:
        model: The network (evaluated in its current mode; the caller picks eval mode).
        batch_loss: How a batch becomes a mean loss.
        batch: At least two samples.
        names: Trainable parameters to use; None for all with ``requires_grad``.
        chunk_size: Samples per ``vmap`` chunk (None: the whole batch at once).
        lr: The learning rate for CABS (None: no ``"cabs"``).

    Returns:
        ``{"norm_test", "inner_product_test", "orthogonality_test", "gsnr",
        "early_stopping", "second_moment"}`` (and ``"cabs"`` with ``lr``) as 0-d device
        tensors (no host sync); ``second_moment`` is ``mean_i |g_i|^2``, the numerator of
        the TIC.

    Example:
        >>> import torch
        >>> from optiscope.batch_loss import as_batch_loss
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(3, 1)
        >>> X, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> out = gradient_tests(model, as_batch_loss(torch.nn.MSELoss()), (X, y))
        >>> sorted(out)[:3], bool(out["norm_test"] > 0)
        (['early_stopping', 'gsnr', 'inner_product_test'], True)
    """
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    B = batch_loss.size(batch)
    if B < 2:
        raise ValueError(f"gradient tests need a batch of at least 2 samples, got {B}")
    # The projections g_i.G need G first, so every chunk's per-sample gradients are kept.
    pairs = list(per_sample_gradients(model, batch_loss, batch, names, chunk_size))
    return tests_from_gradients(pairs, lr)


def tests_from_gradients(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], lr: float | torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """:func:`gradient_tests` from the chunks :func:`per_sample_gradients` yielded."""
    chunks = [g for g, _ in pairs]
    B = sum(c.shape[0] for c in chunks)
    total = torch.stack([c.sum(0) for c in chunks]).sum(0)
    G = total / B
    sq = torch.cat([c.square().sum(1) for c in chunks])  # |g_i|^2
    proj = torch.cat([c @ G for c in chunks])  # g_i . G
    elem_sq = torch.stack([c.square().sum(0) for c in chunks]).sum(0) / B  # mean_i g_ij^2
    g2 = G.square().sum()
    norm_var = (sq.sum() - B * g2) / (B - 1)
    inner_var = (proj.square().sum() - B * g2.square()) / (B - 1)
    ortho_var = (sq.sum() - proj.square().sum() / g2) / (B - 1)
    gsnr = (G.square() / (elem_sq - G.square() + GSNR_EPS)).mean()
    coord_var = (B * elem_sq - B * G.square()) / (B - 1)
    out = {
        "norm_test": (norm_var / B / g2).sqrt(),
        "inner_product_test": (inner_var / B / g2.square()).sqrt(),
        "orthogonality_test": (ortho_var / B / g2).sqrt(),
        "gsnr": gsnr,
        "early_stopping": 1 - B * (G.square() / (coord_var + GSNR_EPS)).mean(),
        "second_moment": sq.mean(),
    }
    if lr is not None:
        loss = torch.cat([v.reshape(-1) for _, v in pairs]).mean()
        out["cabs"] = lr * (sq.mean() - g2) / loss
    return out
