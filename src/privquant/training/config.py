"""The training recipe, validated before any work starts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CROP_PADDING = 4


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
    crop_padding: int | None = Field(
        None,
        ge=1,
        description=f"pixels of zero padding before the random crop (default {DEFAULT_CROP_PADDING});"
        " only with a crop in augment",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA; on CPU whichever of bf16 autocast and fp32 trains "
        "this model faster here, measured once per machine (privquant.training.precision)",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="NHWC memory format for image models; auto: measured with precision"
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    seed: int = 0
    eval_batch_size: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _padding_needs_a_crop(self) -> TrainConfig:
        # A padding without a crop used to be accepted and silently ignored: the ResNet-20 studies
        # believed they cropped and did not. Saying so is cheaper than that mistake.
        if self.crop_padding is not None and "crop" not in self.augment:
            raise ValueError(
                f"crop_padding is {self.crop_padding} but augment is {self.augment!r}, which has no"
                " crop, so the padding would be ignored: use augment: crop+flip (or crop), or drop"
                " crop_padding"
            )
        return self

    @property
    def padding(self) -> int:
        """The crop's padding in pixels (0 when there is no crop)."""
        if "crop" not in self.augment:
            return 0
        return DEFAULT_CROP_PADDING if self.crop_padding is None else self.crop_padding
