"""Fashion-MNIST read from its four published IDX files: real photographs with no download.

70,000 grey 28x28 images of clothing in 10 classes (60,000 train / 10,000 test, the published
split). Debian ships the files (``apt-get install -y dataset-fashion-mnist``). A class-balanced,
seeded subset of either split keeps a CPU run short; images are resized to SIZE px and served as
RGB so that the standard augmentations and a ResNet apply.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .grey_images import GreyImages

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# split -> (images file, labels file), as published (each may also be stored uncompressed)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NATIVE_SIZE = 28
# IDX type codes (the third byte of the magic number) -> numpy dtype, big-endian as stored.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFormatError(ValueError):
    """A file that is missing or not a well-formed IDX array."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as err:
        raise IdxFormatError(f"{path}: cannot read it ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise IdxFormatError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'missing'}; expected "
            "00 00 <type> <ndim>)"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(data)} bytes for {ndim} dims)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise IdxFormatError(
            f"{path}: {len(data)} bytes; expected {expected} for an array of shape {shape}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise IdxFormatError(
        f"Fashion-MNIST: {root / (stem + '.gz')} not found; expected the four IDX files in "
        f"DATA.ROOT = {root} (on Debian: {INSTALL_HINT}, which puts them in {DEFAULT_ROOT})"
    )


@functools.cache
def load_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images (N x 28 x 28 uint8) and labels (N int64) of a published split, read once."""
    if split not in SPLIT_FILES:
        raise ValueError(f"Fashion-MNIST split = {split!r}; expected train or val")
    images_file, labels_file = (_find(Path(root), stem) for stem in SPLIT_FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"{images_file}: an array of {images.dtype} with shape {images.shape}; expected uint8 "
            "images N x H x W"
        )
    in_range = labels.size == 0 or 0 <= labels.min() <= labels.max() < 10
    if labels.shape != (len(images),) or not in_range:
        raise IdxFormatError(
            f"{labels_file}: labels of shape {labels.shape} (values {labels.min(initial=0)}.."
            f"{labels.max(initial=0)}); expected {len(images)} labels in 0..9, one per image of "
            f"{images_file.name}"
        )
    return images, labels.astype(np.int64)


def balanced_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` images, ``size / 10`` of each class drawn by ``seed``
    (all images when ``size`` is 0)."""
    if size == 0:
        return np.arange(len(labels))
    per_class, classes = size // 10, np.unique(labels)
    if size % 10 or per_class < 1:
        raise ValueError(f"subset size {size}; expected a positive multiple of 10 (or 0 = all)")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"subset size {size} needs {per_class} images of class {label}; the split has "
                f"{len(members)}"
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


class FashionMNISTDataset(GreyImages):
    """One split as ``(image, label)``; ``sample_ids`` are the images' indices in the published
    files ("00000".."59999"), so a labeled list names the same image whatever the subset."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: int = 32,
        subset: int = 0,
        subset_seed: int = 0,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        if size < NATIVE_SIZE // 2:
            raise ValueError(f"DATA.FASHION_MNIST.SIZE = {size}; expected at least 14 px")
        images, labels = load_split(str(root), split)
        indices = balanced_subset(labels, subset, subset_seed)
        resized = [
            images[i]
            if size == images.shape[1]
            else np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BILINEAR))
            for i in indices
        ]
        targets = labels[indices]
        super().__init__(resized, targets, indices, FASHION_MNIST_CLASSES, 5, transform)
