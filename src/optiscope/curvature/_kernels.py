"""Kernels with a correct double backward, chosen for every curvature evaluation.

Fused attention kernels (``F.scaled_dot_product_attention``'s flash and memory-efficient
backends on CPU and CUDA, cuDNN attention on CUDA) implement a first derivative only:
differentiating their backward raises "derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented". The
``math`` backend is plain matmul and softmax, so it has every derivative. And
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` in eval mode may take a "fast
path" (``torch._native_multi_head_attention``, ``torch._transformer_encoder_layer_fwd``)
without autograd support; turning it off keeps them on their differentiable composite.

:func:`double_backward_kernels` selects both for the duration of a block and puts the
caller's choices back afterwards, also on error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["double_backward_kernels"]


@contextmanager
def double_backward_kernels() -> Iterator[None]:
    """Evaluate with the SDPA math backend and the MHA fast path off; restore on exit.

    Example:
        >>> import torch
        >>> before = torch.backends.mha.get_fastpath_enabled()
        >>> with double_backward_kernels():
        ...     torch.backends.mha.get_fastpath_enabled()
        False
        >>> torch.backends.mha.get_fastpath_enabled() == before
        True
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
