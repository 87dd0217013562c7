"""MoCo v1 and v2 augmentations (docs/methods.md §1), the two-crop wrapper, the eval transform."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.config import CfgNode
from PIL import Image, ImageFilter
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PILGaussianBlur:
    """Gaussian blur with σ drawn uniformly from ``sigma``, by PIL (as MoCo v2 does).

    Written here because torchvision's ``GaussianBlur`` turns a PIL image into a tensor and
    convolves it with a dense 2-D kernel: at 224 px it costs tens of milliseconds a crop and
    made the data loader the bottleneck of GPU training, while PIL's blur takes about one.
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        sigma = torch.empty(1).uniform_(self.sigma[0], self.sigma[1]).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def _to_normalized_tensor() -> list[Any]:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def moco_v1_augmentation(
    size: int, scale: tuple[float, float] = (0.2, 1.0), hflip: bool = True
) -> T.Compose:
    """MoCo v1: crop, grayscale (p 0.2), colour jitter 0.4 (hue too), flip (unless ``hflip`` is
    off)."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=scale),
            T.RandomGrayscale(p=0.2),
            T.ColorJitter(0.4, 0.4, 0.4, 0.4),
            *([T.RandomHorizontalFlip()] if hflip else []),
            *_to_normalized_tensor(),
        ]
    )


def moco_v2_augmentation(
    size: int, scale: tuple[float, float] = (0.2, 1.0), hflip: bool = True
) -> T.Compose:
    """MoCo v2: crop, colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur σ 0.1-2 (p 0.5),
    flip (unless ``hflip`` is off)."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=scale),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
            *([T.RandomHorizontalFlip()] if hflip else []),
            *_to_normalized_tensor(),
        ]
    )


class TwoCropsTransform:
    """Two independent draws of one augmentation: the query and the key view of an image."""

    def __init__(self, base: T.Compose) -> None:
        self.base = base

    def __call__(self, image: Image.Image) -> list[Any]:
        return [self.base(image), self.base(image)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"


def build_pretrain_transform(cfg: CfgNode) -> TwoCropsTransform:
    """The two-crop augmentation ``INPUT.AUG`` names, at ``INPUT.SIZE``, ``INPUT.CROP_SCALE`` and
    ``INPUT.HFLIP``."""
    builders = {"v1": moco_v1_augmentation, "v2": moco_v2_augmentation}
    if cfg.INPUT.AUG not in builders:
        raise ValueError(f"INPUT.AUG = {cfg.INPUT.AUG!r}; expected v1 or v2")
    scale = tuple(float(s) for s in cfg.INPUT.CROP_SCALE)
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(
            f"INPUT.CROP_SCALE = {cfg.INPUT.CROP_SCALE}; "
            "expected (min, max) with 0 < min <= max <= 1"
        )
    return TwoCropsTransform(builders[cfg.INPUT.AUG](cfg.INPUT.SIZE, scale, cfg.INPUT.HFLIP))


def build_eval_transform(size: int) -> T.Compose:
    """Resize the short side to size·256/224, centre-crop ``size``: the 256/224 protocol."""
    return T.Compose(
        [T.Resize(round(size * 256 / 224)), T.CenterCrop(size), *_to_normalized_tensor()]
    )
