"""Per-sample random parameters of the batched (GPU) MoCo augmentation, drawn on the CPU.

The draws follow the CPU transforms of ``transforms.py`` (torchvision's RandomResizedCrop,
ColorJitter in a random order, RandomGrayscale, the v2 blur, the flip), one independent draw
per crop. Sampling is kept apart from the tensor ops so tests can fix the parameters, and it
runs on the CPU from a private generator, so the ops that use them need no host synchronisation
and the crops of a batch are a function of its seed alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from fvcore.common.config import CfgNode

# torchvision's RandomResizedCrop: 10 tries, then a centre crop clamped to the ratio range.
_CROP_ATTEMPTS = 10


@dataclass(frozen=True)
class AugmentSpec:
    """The distributions of one MoCo augmentation (docs/methods.md §1); v2 by default."""

    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # ColorJitter strengths: brightness, contrast, saturation, hue.
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    # MoCo v1 converts to grey before the jitter, v2 after it.
    gray_first: bool = False
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_p: float = 0.5


@dataclass
class AugmentParams:
    """One row per crop, all on the CPU. ``boxes`` are (top, left, height, width) in pixels;
    ``factors`` are (brightness, contrast, saturation, hue); ``order`` a permutation of the four
    jitter ops; ``sigma`` 0 means no blur."""

    boxes: torch.Tensor  # int64 (N, 4)
    jitter: torch.Tensor  # bool (N,)
    factors: torch.Tensor  # float32 (N, 4)
    order: torch.Tensor  # int64 (N, 4)
    gray: torch.Tensor  # bool (N,)
    sigma: torch.Tensor  # float32 (N,)
    flip: torch.Tensor  # bool (N,)

    def __len__(self) -> int:
        return len(self.boxes)


def augment_spec(cfg: CfgNode) -> AugmentSpec:
    """The spec of ``INPUT.AUG`` (v1 or v2) at ``INPUT.SIZE``, ``INPUT.CROP_SCALE`` and
    ``INPUT.HFLIP``."""
    scale = (float(cfg.INPUT.CROP_SCALE[0]), float(cfg.INPUT.CROP_SCALE[1]))
    flip_p = 0.5 if cfg.INPUT.HFLIP else 0.0
    if cfg.INPUT.AUG == "v1":
        v1 = {"jitter": (0.4, 0.4, 0.4, 0.4), "jitter_p": 1.0, "gray_first": True, "blur_p": 0.0}
        return AugmentSpec(cfg.INPUT.SIZE, scale, flip_p=flip_p, **v1)
    return AugmentSpec(cfg.INPUT.SIZE, scale, flip_p=flip_p)


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low


def _bernoulli(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def sample_crop_boxes(
    heights: torch.Tensor, widths: torch.Tensor, spec: AugmentSpec, gen: torch.Generator
) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, height, width), torchvision's rule for every row."""
    n = len(heights)
    h, w = heights.double()[:, None], widths.double()[:, None]
    area = h * w * _uniform((n, _CROP_ATTEMPTS), *spec.scale, gen)
    log_ratio = _uniform((n, _CROP_ATTEMPTS), math.log(spec.ratio[0]), math.log(spec.ratio[1]), gen)
    aspect = torch.exp(log_ratio)
    crop_w = torch.round(torch.sqrt(area * aspect))
    crop_h = torch.round(torch.sqrt(area / aspect))
    fits = (crop_w > 0) & (crop_w <= w) & (crop_h > 0) & (crop_h <= h)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first try that fits
    crop_h, crop_w = crop_h.gather(1, first)[:, 0], crop_w.gather(1, first)[:, 0]
    h, w = h[:, 0], w[:, 0]
    top = torch.floor(torch.rand(n, generator=gen, dtype=torch.float64) * (h - crop_h + 1))
    left = torch.floor(torch.rand(n, generator=gen, dtype=torch.float64) * (w - crop_w + 1))

    # No try fit: the whole image, cut to the nearest end of the ratio range.
    in_ratio = w / h
    fb_w = torch.where(in_ratio > spec.ratio[1], torch.round(h * spec.ratio[1]), w)
    fb_h = torch.where(in_ratio < spec.ratio[0], torch.round(w / spec.ratio[0]), h)
    fb_top, fb_left = torch.div(h - fb_h, 2, rounding_mode="floor"), (w - fb_w) // 2
    found = fits.any(dim=1)
    boxes = torch.stack(
        [
            torch.where(found, top, fb_top),
            torch.where(found, left, fb_left),
            torch.where(found, crop_h, fb_h),
            torch.where(found, crop_w, fb_w),
        ],
        dim=1,
    )
    return boxes.long()


def sample_params(
    heights: torch.Tensor, widths: torch.Tensor, spec: AugmentSpec, gen: torch.Generator
) -> AugmentParams:
    """Independent augmentation parameters for crops of images of the given sizes."""
    n = len(heights)
    b, c, s, hue = spec.jitter
    factors = torch.stack(
        [
            _uniform((n,), max(0.0, 1 - b), 1 + b, gen),
            _uniform((n,), max(0.0, 1 - c), 1 + c, gen),
            _uniform((n,), max(0.0, 1 - s), 1 + s, gen),
            _uniform((n,), -hue, hue, gen),
        ],
        dim=1,
    ).float()
    blur = _bernoulli(n, spec.blur_p, gen)
    sigma = _uniform((n,), *spec.blur_sigma, gen).float() * blur
    return AugmentParams(
        boxes=sample_crop_boxes(heights, widths, spec, gen),
        jitter=_bernoulli(n, spec.jitter_p, gen),
        factors=factors,
        order=torch.argsort(torch.rand(n, 4, generator=gen), dim=1),
        gray=_bernoulli(n, spec.gray_p, gen),
        sigma=sigma,
        flip=_bernoulli(n, spec.flip_p, gen),
    )
