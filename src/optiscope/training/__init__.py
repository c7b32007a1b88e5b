"""The training framework: AdvancedTrainer, checkpoints, metric history, lr_find, DDP."""

from optiscope.training._checkpoint import CheckpointError
from optiscope.training._lr_find import LRFindResult, lr_find
from optiscope.training._metrics import History, StepRecord
from optiscope.training._plots import plot_training_curves
from optiscope.training._state import TrainState
from optiscope.training._trainer import AdvancedTrainer

__all__ = [
    "AdvancedTrainer",
    "CheckpointError",
    "History",
    "LRFindResult",
    "StepRecord",
    "TrainState",
    "lr_find",
    "plot_training_curves",
]
