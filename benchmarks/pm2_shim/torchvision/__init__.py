"""The part of torchvision Privacy Meter 2's CIFAR-10 path uses (see ../README.md)."""

from torchvision import datasets, models, transforms

__all__ = ["datasets", "models", "transforms"]
