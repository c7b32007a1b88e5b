"""Curvature of the loss: Hessian-vector products, eigenvalues, trace, spectral density.

Everything works from Hessian-vector products computed with ``torch.func`` over a tensor
batch or a DataLoader in any batch layout (weighted by ``BatchLoss.size``), in eval mode,
with the model restored bit-for-bit afterwards. ``loss_fn`` is a ``loss_fn(output,
target)``, a :class:`~optiscope.batch_loss.BatchLoss`, or None for a model that returns
its own ``.loss``. Attention is evaluated on kernels with a double backward (the SDPA
math backend, no multi-head attention fast path), on CPU and CUDA. Use it as a module::

    from optiscope import curvature
    curvature.hessian_eigenvalues(model, loss_fn, X, y, top_k=2).eigenvalues
    curvature.hessian_trace(model, None, hf_style_loader).method  # 'krylov-hutch++'
"""

from __future__ import annotations

from optiscope.curvature._density import DensityResult, hessian_density, plot_density
from optiscope.curvature._directions import hessian_directions
from optiscope.curvature._eigen import EigenResult, hessian_eigenvalues
from optiscope.curvature._hvp import HessianOperator, hvp
from optiscope.curvature._layerwise import LayerCurvature, layerwise_curvature
from optiscope.curvature._trace import TraceResult, hessian_trace

__all__ = [
    "DensityResult",
    "EigenResult",
    "HessianOperator",
    "LayerCurvature",
    "TraceResult",
    "hessian_density",
    "hessian_directions",
    "hessian_eigenvalues",
    "hessian_trace",
    "hvp",
    "layerwise_curvature",
    "plot_density",
]
