"""optiscope: the optimisation side of deep learning in PyTorch.

Learning-rate schedules with warmup, gradient clipping and gradient health, an
exact-resuming trainer with an LR finder, loss landscapes and curvature. The guide's names
(``StepDecay``, ``clip_grad_norm_``, ``AdvancedTrainer``, ``visualize_loss_2d``, ...) are
all importable from here, so ``from optiscope import *`` runs its examples. Landscapes and
curvature are also used as modules: ``from optiscope import landscape, curvature``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Each subpackage owns one block below; keep the names explicit and mirror them in __all__.

# --- data and built-in models -------------------------------------------------------
from optiscope.data import digits_loaders, digits_tensors
from optiscope.models import digits_cnn, digits_mlp

# --- schedules ----------------------------------------------------------------------

# --- clipping -----------------------------------------------------------------------

# --- landscape (guide's functions; the rest via `optiscope.landscape`) ----------------

# --- curvature (via `optiscope.curvature`) -------------------------------------------

# --- training -----------------------------------------------------------------------

__all__ = [
    "__version__",
    # data and models
    "digits_loaders",
    "digits_tensors",
    "digits_cnn",
    "digits_mlp",
    # schedules
    # clipping
    # landscape
    # curvature
    # training
]
