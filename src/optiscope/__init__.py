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
from optiscope.schedules import (
    SCHEDULES,
    Constant,
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    Decay,
    ExponentialDecay,
    InverseSqrt,
    InverseSqrtDecay,
    Join,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PolynomialDecay,
    Schedule,
    ScheduleLR,
    StepDecay,
    WarmupCosineSchedule,
    WarmupOptimizer,
    WarmupStableDecay,
    compare_schedules,
    describe,
    get_schedule,
    join,
    plot_schedule,
)

# --- clipping -----------------------------------------------------------------------
from optiscope.clipping import (
    AGC,
    CLIPPERS,
    AutoClip,
    ClipResult,
    Clipper,
    GradientTracker,
    NoClip,
    NormClip,
    ValueClip,
    ZClip,
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_value_,
    get_clipper,
    grad_norms,
    plot_gradient_norms,
    train_with_gradient_tracking,
)

# --- landscape (guide's functions; the rest via `optiscope.landscape`) ----------------
# Importing from the subpackage also binds `optiscope.landscape` for module-style use.
from optiscope.landscape import (
    visualize_loss_1d,
    visualize_loss_2d,
    visualize_loss_random_directions,
)

# --- curvature (via `optiscope.curvature`) -------------------------------------------
# Module-style access only; kept in this block rather than sorted to the top.
from optiscope import curvature  # isort: skip

# --- training -----------------------------------------------------------------------
from optiscope.training import (
    AdvancedTrainer,
    CheckpointError,
    LRFindResult,
    StepRecord,
    lr_find,
    plot_training_curves,
)

__all__ = [
    "__version__",
    # data and models
    "digits_loaders",
    "digits_tensors",
    "digits_cnn",
    "digits_mlp",
    # schedules
    "Schedule",
    "Constant",
    "StepDecay",
    "ExponentialDecay",
    "CosineAnnealingScheduler",
    "CosineAnnealingWarmRestarts",
    "MultiStepDecay",
    "PolynomialDecay",
    "LinearWarmup",
    "WarmupCosineSchedule",
    "WarmupOptimizer",
    "OneCycle",
    "CyclicLR",
    "InverseSqrt",
    "InverseSqrtDecay",
    "WarmupStableDecay",
    "Decay",
    "Join",
    "join",
    "ScheduleLR",
    "SCHEDULES",
    "get_schedule",
    "describe",
    "plot_schedule",
    "compare_schedules",
    # clipping
    "AGC",
    "CLIPPERS",
    "AutoClip",
    "ClipResult",
    "Clipper",
    "GradientTracker",
    "NoClip",
    "NormClip",
    "ValueClip",
    "ZClip",
    "adaptive_clip_grad_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "get_clipper",
    "grad_norms",
    "plot_gradient_norms",
    "train_with_gradient_tracking",
    # landscape
    "landscape",
    "visualize_loss_1d",
    "visualize_loss_2d",
    "visualize_loss_random_directions",
    # curvature
    "curvature",
    # training
    "AdvancedTrainer",
    "CheckpointError",
    "LRFindResult",
    "StepRecord",
    "lr_find",
    "plot_training_curves",
]
