"""Quantization-aware training through the one trainer.

Two ways to treat BatchNorm, both deploying exactly the trained integer codes: ``fold`` folds it
into the preceding convolution before QAT (no statistics drift; enough at 4+ bits), ``train``
keeps it live during fine-tuning and folds at the end (:mod:`privquant.quant.bn_qat`; what
2-bit weights need to recover).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch
from torch import nn

from privquant.quant.apply import quantize
from privquant.quant.bn_qat import fold_trained_batchnorm, prepare_batchnorm_qat
from privquant.quant.config import QuantConfig
from privquant.training import Objective, TrainConfig, Trainer, TrainResult


def calibration_batches(
    x: np.ndarray, n_batches: int = 8, batch_size: int = 128, seed: int = 0
) -> list[torch.Tensor]:
    """Float input batches (a seeded sample of ``x``) for activation ranges and AdaRound."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[: n_batches * batch_size]
    xb = torch.from_numpy(x[idx])
    xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
    return list(xb.split(batch_size))


def quantization_aware_training(
    model: nn.Module,
    config: QuantConfig,
    x: np.ndarray,
    y: np.ndarray,
    train_config: TrainConfig,
    calibration_data: Iterable[torch.Tensor] | None = None,
    objective: Objective | None = None,
    progress: bool = True,
    batchnorm: Literal["train", "fold"] = "train",
) -> tuple[nn.Module, TrainResult]:
    """Quantize ``model`` (scales initialized by PTQ calibration), then fine-tune it on (x, y).

    Weights learn through the straight-through estimator; with ``config.learn_scale`` the step
    sizes learn too (LSQ). ``objective`` replaces cross-entropy (the privacy objectives plug in
    here). ``batchnorm`` chooses when BatchNorm is folded (module docstring); the returned model
    is the deployable, folded one either way.
    """
    calib = list(calibration_data) if calibration_data is not None else calibration_batches(x)
    config = config.model_copy(update={"rounding": "nearest"})
    if batchnorm == "train":
        qmodel = prepare_batchnorm_qat(model, config, calib)
        result = Trainer(train_config, objective=objective).fit(qmodel, x, y, progress=progress)
        return fold_trained_batchnorm(qmodel, config), result
    qmodel = quantize(model, config, calib)
    result = Trainer(train_config, objective=objective).fit(qmodel, x, y, progress=progress)
    return qmodel, result
