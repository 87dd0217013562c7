"""Datasets: ImageNet-layout folders, the generated shapes, CIFAR-10/100, STL-10, digits and
Fashion-MNIST.

All return ``(image, target)`` (target -1 = unlabeled) and expose ``targets``, ``classes`` and
``sample_ids`` (the names labeled-subset lists use). An image that cannot be decoded comes back
as ``None`` with a warning, so one bad file among millions does not end a long run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torchvision
from fvcore.common.config import CfgNode
from PIL import Image
from torch.utils.data import Dataset, default_collate

from .digits import DigitsDataset
from .fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from .fashion_mnist import FashionMNISTDataset, IdxFormatError
from .shapes import default_shapes_root, ensure_shapes_imagefolder

logger = logging.getLogger("unimoco.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DATASET_NAMES = ("imagefolder", "shapes", "cifar10", "cifar100", "stl10", "digits", "fashion_mnist")
SPLITS = ("train", "val")
STL10_CLASSES = (
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
)
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_MAX_LISTED = 5

Transform = Callable[[Image.Image], Any]


class DatasetError(ValueError):
    """A dataset root that is missing or not in the expected layout."""


def _listing(names: Sequence[str]) -> str:
    more = len(names) - _MAX_LISTED
    return ", ".join(names[:_MAX_LISTED]) + (f" (and {more} more)" if more > 0 else "")


def _class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"dataset root {root} has no class subfolders; expected <root>/<class>/<image> "
            "(ImageNet layout)"
        )
    return classes


def scan_image_folder(root: str | Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``(relative posix path, class index)`` for every image under ``<root>/<class>/`` (searched
    recursively; hidden files skipped), and the sorted class names."""
    root = Path(root)
    classes = _class_folders(root)
    samples, empty = [], []
    for index, name in enumerate(classes):
        found = []
        for folder, dirs, files in os.walk(root / name, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(folder).relative_to(root).as_posix()
            found += [
                f"{rel}/{f}"
                for f in files
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            ]
        if not found:
            empty.append(name)
        samples += [(path, index) for path in sorted(found)]
    if empty:
        raise DatasetError(
            f"dataset root {root}: {len(empty)} class folders hold no images "
            f"({', '.join(IMAGE_EXTENSIONS)}): {_listing(empty)}"
        )
    return samples, classes


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to 8-bit RGB: grey, alpha, CMYK, palette and 16-bit inputs alike."""
    with Image.open(path) as image:
        if image.mode in _SIXTEEN_BIT_MODES:
            grey = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) // 257
            return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return image.convert("RGB")


class Unreadable(NamedTuple):
    """Stands in for an item that could not be read or decoded: the collate functions leave it
    out of the batch and pass its ``name`` on, so that errors can name the files."""

    name: str


class ImageListDataset(Dataset):
    """Images listed as ``(path relative to root, class index)``; ``targets`` (what is returned,
    -1 = unlabeled) starts as the class indices and may be replaced by a labeled subset."""

    def __init__(
        self,
        root: str | Path,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        self.samples = list(samples)
        self.classes = list(classes)
        self.targets = [int(target) for _, target in self.samples]
        self.transform = transform

    @classmethod
    def from_folder(cls, root: str | Path, transform: Transform | None = None) -> ImageListDataset:
        """The dataset of an ImageNet-layout folder (see ``scan_image_folder``)."""
        samples, classes = scan_image_folder(root)
        return cls(root, samples, classes, transform)

    @property
    def sample_ids(self) -> list[str]:
        return [path for path, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | Unreadable:
        path = self.root / self.samples[index][0]
        try:
            image = load_rgb(path)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
            logger.warning("cannot decode %s (%s: %s); skipping it", path, type(err).__name__, err)
            return Unreadable(str(path))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class TorchvisionImages(Dataset):
    """A torchvision CIFAR / STL-10 reader behind the ImageListDataset contract
    (``sample_ids`` are the indices as strings)."""

    def __init__(
        self,
        base: Dataset,
        root: str | Path,
        classes: Sequence[str],
        targets: Sequence[int],
        transform: Transform | None = None,
    ) -> None:
        self.base = base
        self.root = Path(root)
        self.classes = list(classes)
        self.targets = [int(target) for target in targets]
        self.transform = transform

    @property
    def sample_ids(self) -> list[str]:
        return [str(index) for index in range(len(self))]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.base[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _require_files(root: str | Path, folder: str, names: Sequence[str], expected: str) -> None:
    missing = [name for name in names if not (Path(root) / folder / name).is_file()]
    if missing:
        raise DatasetError(
            f"dataset root {root}: missing {folder}/{', '.join(missing)}; expected {folder}/ "
            f"with {expected} (downloads are off: fetch and extract the archive there)"
        )


def _integrity_error(root: str | Path, folder: str, err: RuntimeError) -> DatasetError:
    return DatasetError(
        f"dataset root {root}: {folder}/ failed torchvision's md5 check ({err}); "
        "the files are corrupt or not the official ones"
    )


def cifar_dataset(
    root: str | Path, name: str, train: bool, transform: Transform | None = None
) -> TorchvisionImages:
    """CIFAR-10 (``name`` cifar10) or CIFAR-100 (cifar100) from torchvision's python files."""
    reader = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}
    if name not in reader:
        raise DatasetError(f"cifar_dataset: name = {name!r}; expected cifar10 or cifar100")
    cls = reader[name]
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    expected = (
        "data_batch_1..5, test_batch, batches.meta" if name == "cifar10" else "train, test, meta"
    )
    _require_files(root, cls.base_folder, files, expected)
    try:
        base = cls(str(root), train=train, download=False)
    except RuntimeError as err:
        raise _integrity_error(root, cls.base_folder, err) from None
    return TorchvisionImages(base, root, base.classes, base.targets, transform)


def stl10_dataset(
    root: str | Path, split: str, transform: Transform | None = None
) -> TorchvisionImages:
    """STL-10 from torchvision's binary files; ``split`` as torchvision's (train+unlabeled for
    pretraining, whose unlabeled images carry -1; test for evaluation)."""
    cls = torchvision.datasets.STL10
    files = [f for f, _ in cls.train_list + cls.test_list]
    _require_files(root, cls.base_folder, files, ", ".join(files))
    try:
        base = cls(str(root), split=split, download=False)
    except RuntimeError as err:
        raise _integrity_error(root, cls.base_folder, err) from None
    classes = getattr(base, "classes", STL10_CLASSES)  # torchvision sets it from class_names.txt
    return TorchvisionImages(base, root, classes, base.labels, transform)


def _check_same_classes(train_root: str, val_root: str, val_classes: Sequence[str]) -> None:
    train_classes = _class_folders(Path(train_root))
    if train_classes != list(val_classes):
        only_val = sorted(set(val_classes) - set(train_classes))
        only_train = sorted(set(train_classes) - set(val_classes))
        raise DatasetError(
            f"DATA.VAL_ROOT = {val_root} and DATA.ROOT = {train_root} have different class "
            f"folders (only in val: {_listing(only_val) or '-'}; only in train: "
            f"{_listing(only_train) or '-'}); expected the same classes so that labels agree"
        )


def build_dataset(cfg: CfgNode, split: str, transform: Transform | None = None) -> Dataset:
    """The ``split`` ("train" or "val") of the dataset ``cfg.DATA.NAME`` names."""
    if split not in SPLITS:
        raise ValueError(f"build_dataset: split = {split!r}; expected one of {', '.join(SPLITS)}")
    name, train = cfg.DATA.NAME, split == "train"
    if name == "imagefolder":
        root = cfg.DATA.ROOT if train else cfg.DATA.VAL_ROOT
        if not root:
            key = "DATA.ROOT" if train else "DATA.VAL_ROOT"
            raise DatasetError(
                f"{key} is empty; expected the folder whose subfolders are the {split} classes"
            )
        dataset = ImageListDataset.from_folder(root, transform)
        if not train and cfg.DATA.ROOT:
            _check_same_classes(cfg.DATA.ROOT, root, dataset.classes)
        return dataset
    if name == "shapes":
        shapes = cfg.DATA.SHAPES
        folder = ensure_shapes_imagefolder(
            cfg.DATA.ROOT or default_shapes_root(),
            split,
            shapes.NUM_TRAIN if train else shapes.NUM_VAL,
            shapes.IMAGE_SIZE,
            shapes.SEED,
        )
        return ImageListDataset.from_folder(folder, transform)
    if name == "digits":
        digits = cfg.DATA.DIGITS
        return DigitsDataset(split, digits.SIZE, digits.NUM_TEST, digits.SPLIT_SEED, transform)
    if name == "fashion_mnist":
        fashion = cfg.DATA.FASHION_MNIST
        try:
            return FashionMNISTDataset(
                cfg.DATA.ROOT or FASHION_MNIST_ROOT,
                split,
                fashion.SIZE,
                fashion.NUM_TRAIN if train else fashion.NUM_TEST,
                fashion.SUBSET_SEED,
                transform,
            )
        except IdxFormatError as err:
            raise DatasetError(str(err)) from None
    if name not in DATASET_NAMES:
        raise DatasetError(f"DATA.NAME = {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if not cfg.DATA.ROOT:
        raise DatasetError(f"DATA.ROOT is empty; expected the torchvision root of {name}")
    if name == "stl10":
        return stl10_dataset(cfg.DATA.ROOT, "train+unlabeled" if train else "test", transform)
    return cifar_dataset(cfg.DATA.ROOT, name, train, transform)


def collate_skip_bad(
    batch: Sequence[tuple[Any, int] | Unreadable],
) -> tuple[Any, torch.Tensor, list[str]]:
    """``(images, int64 targets, names of the unreadable items left out)``; images of two crops
    collate to a list of two batches. An all-bad batch gives empty tensors."""
    good = [item for item in batch if not isinstance(item, Unreadable)]
    bad = [item.name for item in batch if isinstance(item, Unreadable)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), bad
    images = default_collate([image for image, _ in good])
    targets = torch.tensor([target for _, target in good], dtype=torch.int64)
    return images, targets, bad
