"""The training recipe, validated before any work starts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Everything that determines a trained model besides the data and the architecture."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1, description="passes over the training set")
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov)")
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = Field(
        0.15, ge=0, lt=1, description="onecycle: share of steps warming up"
    )
    augment: Literal["none", "flip", "crop", "crop+flip"] = "none"
    crop_padding: int = Field(4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CPUs with AMX/AVX512-BF16 and on CUDA, else fp32",
    )
    channels_last: bool = Field(
        True, description="NHWC memory format for image models (faster on CPU)"
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    seed: int = 0
    eval_batch_size: int = Field(1024, ge=1)
