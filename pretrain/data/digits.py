"""The UCI handwritten digits scikit-learn ships: real data that needs no download.

1,797 grey 8x8 images (values 0..16) of the digits 0-9, upsampled to RGB squares so that the
standard augmentations and a ResNet apply, with a fixed stratified train/test split by seed.
Nothing is written to disk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .grey_images import GreyImages

DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
NUM_IMAGES = 1797
MAX_VALUE = 16  # the digits' grey levels run from 0 to 16
MIN_SIZE = 8


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All images as uint8 0..255 (N x 8 x 8) and their labels, read once per process."""
    bunch = load_digits()
    images = np.round(bunch.images * (255 / MAX_VALUE)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def digits_split(num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the train and test images: a stratified split, fixed by ``seed``."""
    if not 10 <= num_test <= NUM_IMAGES - 10:
        raise ValueError(
            f"DATA.DIGITS.NUM_TEST = {num_test}; expected 10 to {NUM_IMAGES - 10} "
            "(at least one image of each class on both sides)"
        )
    if seed < 0:
        raise ValueError(f"DATA.DIGITS.SPLIT_SEED = {seed}; expected a non-negative integer")
    _, labels = _digits()
    train, test = train_test_split(
        np.arange(NUM_IMAGES), test_size=num_test, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(test)


class DigitsDataset(GreyImages):
    """One split of the digits as ``(image, label)``; ``sample_ids`` are the images' indices in
    scikit-learn's array ("0000".."1796"), so a labeled list names the same image in any split."""

    def __init__(
        self,
        split: str,
        size: int = 32,
        num_test: int = 360,
        seed: int = 0,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"DigitsDataset: split = {split!r}; expected train or val")
        if size < MIN_SIZE:
            raise ValueError(
                f"DATA.DIGITS.SIZE = {size}; expected at least {MIN_SIZE} (the native size)"
            )
        train, test = digits_split(num_test, seed)
        indices = train if split == "train" else test
        images, labels = _digits()
        resized = [
            np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BILINEAR))
            for i in indices
        ]
        super().__init__(resized, labels[indices], indices, DIGIT_CLASSES, 4, transform)
