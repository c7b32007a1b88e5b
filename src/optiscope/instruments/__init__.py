"""Training-dynamics instruments: sharpness against 2/lr, gradient noise scale and critical
batch size, per-layer update ratios, distance from init, Cockpit's gradient tests and
its per-sample gradient histograms and effective step size alpha.

:class:`Instruments` works in any hand-written loop (call it after backward and after the
optimizer step); :class:`InstrumentsCallback` runs it inside ``AdvancedTrainer``. Every
per-step value stays on the device until a log point; :mod:`optiscope.instruments.plots`
draws the history.
"""

from optiscope.instruments._alpha import step_alpha
from optiscope.instruments._callback import InstrumentsCallback
from optiscope.instruments._grad_tests import gradient_tests
from optiscope.instruments._hist import Histogram, gradient_histograms
from optiscope.instruments._instruments import Instruments
from optiscope.instruments._noise import noise_estimates
from optiscope.instruments._options import DEFAULT_QUANTITIES, NOISE_SOURCES, QUANTITIES
from optiscope.instruments._sharpness import preconditioned_threshold, sharpness_threshold

__all__ = [
    "DEFAULT_QUANTITIES",
    "NOISE_SOURCES",
    "QUANTITIES",
    "Histogram",
    "Instruments",
    "InstrumentsCallback",
    "gradient_histograms",
    "gradient_tests",
    "noise_estimates",
    "preconditioned_threshold",
    "sharpness_threshold",
    "step_alpha",
]
