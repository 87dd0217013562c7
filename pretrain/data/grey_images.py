"""Small grey image sets held in memory as uint8 arrays (digits, Fashion-MNIST), served as RGB
PIL images so that the standard augmentations and a ResNet apply."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


class GreyImages(Dataset):
    """``(image, label)`` pairs of ``images`` (H x W uint8 arrays); ``sample_ids`` are the
    images' indices in their published array, zero-padded to ``id_width`` digits."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[int],
        indices: np.ndarray,
        classes: Sequence[str],
        id_width: int,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.images = list(images)
        self.targets = [int(target) for target in targets]
        self.indices = indices
        self.classes = list(classes)
        self.id_width = id_width
        self.transform = transform

    @property
    def sample_ids(self) -> list[str]:
        return [f"{index:0{self.id_width}d}" for index in self.indices]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
