"""optiscope: the optimisation side of deep learning in PyTorch.

Learning-rate schedules with warmup, gradient clipping and gradient health, an
exact-resuming trainer with an LR finder, loss landscapes and curvature. The guide's names
(``StepDecay``, ``clip_grad_norm_``, ``AdvancedTrainer``, ``visualize_loss_2d``, ...) are
all importable from here, so ``from optiscope import *`` runs its examples. Landscapes and
curvature are also used as modules: ``from optiscope import landscape, curvature``.

Names load on first use (PEP 562), so ``import optiscope`` is cheap and the ``optiscope``
command's ``--help`` never imports torch; ``from optiscope import *`` loads them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each subpackage owns one block below: the module and the names it exports. Mirror them
# in __all__ and in the TYPE_CHECKING imports at the end, which static tools read
# (tests/test_public_api.py checks that the three agree).
_EXPORTS: dict[str, tuple[str, ...]] = {
    # --- data and built-in models ---
    "optiscope.data": (
        "digits_loaders",
        "digits_tensors",
    ),
    "optiscope.models": (
        "digits_cnn",
        "digits_mlp",
    ),
    # --- schedules ---
    "optiscope.schedules": (
        "SCHEDULES",
        "Constant",
        "CosineAnnealingScheduler",
        "CosineAnnealingWarmRestarts",
        "CyclicLR",
        "Decay",
        "ExponentialDecay",
        "InverseSqrt",
        "InverseSqrtDecay",
        "Join",
        "LinearWarmup",
        "MultiStepDecay",
        "OneCycle",
        "PolynomialDecay",
        "Schedule",
        "ScheduleLR",
        "StepDecay",
        "WarmupCosineSchedule",
        "WarmupOptimizer",
        "WarmupStableDecay",
        "compare_schedules",
        "describe",
        "get_schedule",
        "join",
        "plot_schedule",
    ),
    # --- clipping ---
    "optiscope.clipping": (
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
    ),
    # --- landscape (the guide's functions; the rest via `optiscope.landscape`) ---
    "optiscope.landscape": (
        "visualize_loss_1d",
        "visualize_loss_2d",
        "visualize_loss_random_directions",
    ),
    # --- instruments (the rest via `optiscope.instruments`) ---
    "optiscope.instruments": (
        "Instruments",
        "InstrumentsCallback",
    ),
    # --- training ---
    "optiscope.training": (
        "AdvancedTrainer",
        "CheckpointError",
        "LRFindResult",
        "StepRecord",
        "lr_find",
        "plot_training_curves",
    ),
}

# Subpackages used as modules (`from optiscope import landscape, curvature`).
_MODULES = ("landscape", "curvature", "instruments")

_ORIGIN = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(f"optiscope.{name}")
    elif name in _ORIGIN:
        value = getattr(importlib.import_module(_ORIGIN[name]), name)
    else:
        raise AttributeError(f"module 'optiscope' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ORIGIN) | set(_MODULES))


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
    # instruments
    "instruments",
    "Instruments",
    "InstrumentsCallback",
    # training
    "AdvancedTrainer",
    "CheckpointError",
    "LRFindResult",
    "StepRecord",
    "lr_find",
    "plot_training_curves",
]


if TYPE_CHECKING:
    from optiscope import curvature, instruments, landscape
    from optiscope.data import (
        digits_loaders,
        digits_tensors,
    )
    from optiscope.models import (
        digits_cnn,
        digits_mlp,
    )
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
    from optiscope.instruments import (
        Instruments,
        InstrumentsCallback,
    )
    from optiscope.landscape import (
        visualize_loss_1d,
        visualize_loss_2d,
        visualize_loss_random_directions,
    )
    from optiscope.training import (
        AdvancedTrainer,
        CheckpointError,
        LRFindResult,
        StepRecord,
        lr_find,
        plot_training_curves,
    )
