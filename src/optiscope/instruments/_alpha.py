"""Cockpit's effective relative step size alpha, for any optimizer and any architecture.

Alpha (Schneider et al. 2021, Sec. 3; Cockpit's ``Alpha``) places a step on the loss along
it. With the step ``d = w_after - w_before`` of length ``t = |d|``, a quadratic
``q(x) = mu0 + mu1 x + mu2 x^2`` is fitted to four noisy observations on that line: the
mean per-sample loss at ``x = 0`` and ``x = t`` and its slope ``d . grad / t`` there,
each weighted by the inverse of its variance over the samples (maximum likelihood). Then

    alpha = 2 t / alpha_bar - 1,    alpha_bar = -mu1 / mu2 (where q is back at q(0)),

so ``-1`` is no progress (or a concave fit, still going downhill: Cockpit logs -1), ``0``
a step to the minimum of the fit and ``1`` a step to the other side at the same loss;
above 1 the step overshoots and the loss grows. Cockpit computes the slopes from
BackPACK's per-sample gradients at two consecutive training batches, and falls back to
storing the parameters and every per-sample gradient for optimizers other than plain
SGD. Here both points are evaluated on the fixed probe batch (one loss, so the fit sees
the step and not the change of batch), and the per-sample slopes ``d . grad l_i`` come
from one forward-mode pass (``torch.func.jvp``) per point, so no per-sample gradient is
formed for them and any optimizer's step works; where the gradient tests have computed
the per-sample gradients at the end of the step anyway, its slopes are their dot
products with the step instead. The fit runs on the device in float64, in the
line's normalised coordinate ``s = x / t`` (well conditioned for any step length), with
no host sync.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import jvp, vmap

from optiscope.batch_loss import BatchLoss
from optiscope.curvature._kernels import double_backward_kernels
from optiscope.instruments._grad_tests import _index, has_fused_rnn, sample_loss

__all__ = ["ALPHA_EPS", "PreStepWeights", "fit_alpha", "per_sample_slopes", "step_alpha"]

ALPHA_EPS = 1e-10  # Cockpit's stand-in for a zero variance


@contextmanager
def _no_onednn() -> Iterator[None]:
    """oneDNN's fused RNN layer (``mkldnn_rnn_layer``) has no forward-mode derivative; the
    native RNN kernels do. It is off for every model, not only RNNs: one code path, and
    forward-mode convolutions are no slower without it (3C3D at batch 64: 81 ms per pass
    against 101 ms with it). Turning it off warns about an Intel-GPU TF32 setting that has
    nothing to do with this, which is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def per_sample_slopes(
    model: nn.Module,
    batch_loss: BatchLoss,
    batch: Any,
    names: list[str],
    weights: list[torch.Tensor],
    direction: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's loss at ``weights`` and its derivative along ``direction``.

    One forward-mode pass (``torch.func.jvp``) of the per-sample losses (``vmap`` over
    the samples; a loop for RNNs, whose fused kernels have no batching rule), so no
    per-sample gradient is formed. The model is evaluated in its current mode; its state
    is read, not written.

    Args:
        model: The network.
        batch_loss: How a batch becomes a mean loss.
        batch: The samples.
        names: The trainable parameters ``weights`` and ``direction`` give, in order.
        weights: Where to evaluate (one tensor per name).
        direction: The direction (one tensor per name).

    Returns:
        ``(losses, slopes)``, both ``(B,)``: ``l_i(weights)`` and ``direction . grad l_i``.
    """
    loss_one = sample_loss(model, batch_loss, names)
    looped = has_fused_rnn(model)
    size = batch_loss.size(batch)

    def losses(*w: torch.Tensor) -> torch.Tensor:
        p = dict(zip(names, w))
        if looped:
            return torch.stack([loss_one(p, _index(batch, i)) for i in range(size)])
        return vmap(loss_one, in_dims=(None, 0))(p, batch)

    with double_backward_kernels(), _no_onednn():  # composite kernels have every derivative
        values, slopes = jvp(losses, tuple(weights), tuple(direction))
    return values.detach(), slopes.detach()


def fit_alpha(
    t: torch.Tensor,
    f: tuple[torch.Tensor, torch.Tensor],
    df: tuple[torch.Tensor, torch.Tensor],
    var_f: tuple[torch.Tensor, torch.Tensor],
    var_df: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Alpha from the step length ``t`` and the loss, slope and their variances at the
    start and the end of the step (0-d tensors); Cockpit's ``_fit_quadratic`` and
    ``_get_alpha``, on the device.

    Zero variances become :data:`ALPHA_EPS` (as in Cockpit, without its warning: that
    would need a host sync). A zero step gives -1, as in Cockpit, and so does a fit with
    no curvature (Cockpit's 0 / 0 where the slope is zero too).

    Example:
        >>> import torch
        >>> z = lambda *v: tuple(torch.tensor(float(x)) for x in v)
        >>> # q(x) = (x - 1)^2, a step of length 2 from 0: to the other side
        >>> float(fit_alpha(torch.tensor(2.0), z(1, 1), z(-2, 2), z(1, 1), z(1, 1)))
        1.0
    """
    t = t.double()
    var = torch.stack([*var_f, *var_df]).double()
    var = torch.where(var == 0, ALPHA_EPS, var)
    # In s = x / t the slopes scale by t (variances by t^2): q(s) = a + b s + c s^2 with
    # rows q(0), q(1), q'(0), q'(1).
    scale = torch.stack([torch.ones_like(t), torch.ones_like(t), t, t])
    obs = torch.stack([*f, *df]).double() * scale
    w = 1.0 / (var * scale.square())
    phi = torch.tensor([[1, 0, 0], [1, 1, 1], [0, 1, 0], [0, 1, 2]], dtype=torch.float64,
                       device=obs.device)  # fmt: skip
    normal = phi.T @ (w[:, None] * phi)
    coef, _ = torch.linalg.solve_ex(normal, phi.T @ (w * obs))  # no error check: no sync
    b, c = coef[1], coef[2]
    # alpha_bar = -mu1 / mu2 = -b t / c, so 2 t / alpha_bar - 1 = -2 c / b - 1.
    alpha = -2.0 * c / b - 1.0
    # No step, a concave fit (still going downhill) or a flat one (0 / 0 in Cockpit): -1.
    stuck = (t == 0) | (c <= 0)
    return torch.where(stuck, torch.full_like(alpha, -1.0), alpha)


def step_alpha(
    model: nn.Module,
    batch_loss: BatchLoss,
    batch: Any,
    names: list[str],
    before: list[torch.Tensor],
    after: list[torch.Tensor] | None = None,
    end_gradients: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Alpha of the step from ``before`` to ``after`` on ``batch``, a 0-d device tensor.

    Two forward-mode passes of the batch (one at each end of the step), or one when the
    per-sample gradients at the end are given; the variances are the unbiased sample
    variances over the batch, as in Cockpit.

    Args:
        model: The network, evaluated in its current mode (the caller picks eval mode,
            so that the samples are independent).
        batch_loss: How a batch becomes a mean loss.
        batch: At least two samples.
        names: The trainable parameters, in the order of ``before``.
        before: The weights before the step.
        after: The weights after it (None: the model's current ones).
        end_gradients: The chunks ``(flat per-sample gradients, per-sample losses)`` of
            :func:`~optiscope.instruments._grad_tests.per_sample_gradients` at ``after``
            (same ``names``), when already computed: the end's slopes are then their dot
            products with the step.

    Raises:
        ValueError: Fewer than two samples.

    Example:
        >>> import torch
        >>> from optiscope.batch_loss import as_batch_loss
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(3, 1)
        >>> X, y = torch.randn(16, 3), torch.randn(16, 1)
        >>> names = [n for n, _ in model.named_parameters()]
        >>> before = [p.detach().clone() for p in model.parameters()]
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.2)
        >>> torch.nn.functional.mse_loss(model(X), y).backward(); opt.step()
        >>> a = step_alpha(model, as_batch_loss(torch.nn.MSELoss()), (X, y), names, before)
        >>> round(float(a), 3)  # short of the minimum along the step (0)
        -0.552
    """
    size = batch_loss.size(batch)
    if size < 2:
        raise ValueError(f"alpha needs a batch of at least 2 samples, got {size}")
    if after is None:
        params = dict(model.named_parameters())
        after = [params[n].detach() for n in names]
    direction = [a - b for a, b in zip(after, before)]
    t = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in direction]))
    f, df, var_f, var_df = [], [], [], []
    for point in (before, after):
        if point is after and end_gradients is not None:
            step = torch.cat([d.reshape(-1) for d in direction])
            losses = torch.cat([v.reshape(-1) for _, v in end_gradients])
            slopes = torch.cat([g @ step for g, _ in end_gradients])
        else:
            losses, slopes = per_sample_slopes(model, batch_loss, batch, names, point, direction)
        slopes = slopes / t  # the directional derivative along the unit step
        f.append(losses.mean())
        var_f.append(losses.var())
        df.append(slopes.mean())
        var_df.append(slopes.var())
    return fit_alpha(t, (f[0], f[1]), (df[0], df[1]), (var_f[0], var_f[1]), (var_df[0], var_df[1]))


class PreStepWeights:
    """A copy of the weights before the step alpha is measured at (buffers allocated once).

    Args:
        params: The trainable parameters.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        with torch.no_grad():
            self.buffers = [torch.empty_like(p) for p in params]
        self.step = -1  # the step whose pre-step weights the buffers hold

    def take(self, step: int) -> None:
        """The weights now are ``step``'s pre-step weights: copy them."""
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self.params)
        self.step = step

    def of(self, step: int) -> list[torch.Tensor] | None:
        """``step``'s pre-step weights, or None when no copy was taken for it."""
        return self.buffers if self.step == step else None
