"""Learning-rate schedules: closed-form functions of the step, warmup, composition,
a torch ``LRScheduler`` adapter, previews and plots.

Every schedule is a :class:`Schedule`: ``s(t)`` / ``s.get_lr(t)`` for one step,
``s.values(n)`` for many, ``s.plot(...)`` for a Figure. Use one in a torch loop with
:class:`ScheduleLR`; build one by name with :func:`get_schedule`.
"""

from optiscope.schedules._base import Constant, Schedule
from optiscope.schedules._classic import (
    CosineAnnealingScheduler,
    Decay,
    ExponentialDecay,
    MultiStepDecay,
    PolynomialDecay,
    StepDecay,
)
from optiscope.schedules._compose import Join, join
from optiscope.schedules._cyclic import CyclicLR, OneCycle
from optiscope.schedules._describe import describe
from optiscope.schedules._plot import compare_schedules, guide_schedules, plot_schedule
from optiscope.schedules._registry import SCHEDULES, get_schedule
from optiscope.schedules._torch import ScheduleLR
from optiscope.schedules._transformer import (
    InverseSqrt,
    InverseSqrtDecay,
    WarmupStableDecay,
)
from optiscope.schedules._warm_restarts import CosineAnnealingWarmRestarts
from optiscope.schedules._warmup import LinearWarmup, WarmupCosineSchedule
from optiscope.schedules._warmup_optimizer import WarmupOptimizer

__all__ = [
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
    "guide_schedules",
]
