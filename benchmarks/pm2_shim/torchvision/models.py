"""torchvision.models: not available here (PM2's CIFAR-10 CNN path does not use it)."""

from typing import Any


def vgg16(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("torchvision.models.vgg16 is not available in this shim")
