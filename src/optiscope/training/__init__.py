"""The training framework: AdvancedTrainer, checkpoints, metric tracking, lr_find, DDP."""

from optiscope.training._checkpoint import CheckpointError
from optiscope.training._lr_find import LRFindResult, lr_find
from optiscope.training._metrics import StepRecord
from optiscope.training._plots import plot_training_curves
from optiscope.training._trainer import AdvancedTrainer

__all__ = [
    "AdvancedTrainer",
    "CheckpointError",
    "LRFindResult",
    "StepRecord",
    "lr_find",
    "plot_training_curves",
]
