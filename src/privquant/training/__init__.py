"""One trainer for every model privquant builds."""

from privquant.training.config import TrainConfig
from privquant.training.device import seed_everything
from privquant.training.objectives import (
    CrossEntropy,
    HighEntropyLabels,
    Objective,
    RelaxLoss,
    SoftTargetCrossEntropy,
)
from privquant.training.trainer import (
    Callback,
    Trainer,
    TrainResult,
    channel_stats,
    evaluate,
    predict_logits,
    train_new_model,
)

__all__ = [
    "Callback",
    "CrossEntropy",
    "HighEntropyLabels",
    "Objective",
    "RelaxLoss",
    "SoftTargetCrossEntropy",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "channel_stats",
    "evaluate",
    "predict_logits",
    "seed_everything",
    "train_new_model",
]
