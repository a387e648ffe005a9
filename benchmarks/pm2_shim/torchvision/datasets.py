"""torchvision.datasets.CIFAR10 over the CIFAR-10 arrays privquant loads (same rows, same order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


class CIFAR10(Dataset):
    """Like torchvision's: ``data`` uint8 [N, 32, 32, 3], ``targets`` a list of ints, and
    ``__getitem__`` builds a PIL image and applies ``transform`` per item."""

    dataset_name = "cifar10"

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        download: bool = False,
    ) -> None:
        from privquant.data import load_dataset

        ds = load_dataset(self.dataset_name)
        x, y = (ds.x_train, ds.y_train) if train else (ds.x_test, ds.y_test)
        self.data = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NCHW -> NHWC, as torchvision
        self.targets = [int(v) for v in y]
        self.classes = list(ds.classes)
        self.transform = transform
        self.target_transform = target_transform
        self.root, self.train = root, train

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


class CIFAR100(CIFAR10):
    dataset_name = "cifar100"
