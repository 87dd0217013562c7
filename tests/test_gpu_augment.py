"""Batched (GPU-path) augmentation on CPU tensors: the CPU transforms' distributions, their
outputs for fixed parameters, per-sample randomness, shapes and ranges."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision import transforms as T

from unimoco.pretrain.config import get_cfg
from unimoco.pretrain.data.augment_params import (
    AugmentParams,
    AugmentSpec,
    augment_spec,
    sample_crop_boxes,
    sample_params,
)
from unimoco.pretrain.data.gpu_augment import augment, blur_radius, resized_crops, two_crops
from unimoco.pretrain.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PILGaussianBlur,
    build_pretrain_transform,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cpu_ops(aug: str, hflip: bool = True) -> dict:
    """The random ops of the CPU transform, by kind, with their apply probability and position."""
    cfg = get_cfg()
    cfg.INPUT.AUG, cfg.INPUT.SIZE, cfg.INPUT.CROP_SCALE = aug, 64, (0.3, 0.9)
    cfg.INPUT.HFLIP = hflip
    found = {}
    for position, op in enumerate(build_pretrain_transform(cfg).base.transforms):
        inner, p = op, 1.0
        if isinstance(op, T.RandomApply):
            inner, p = op.transforms[0], op.p
        found[type(inner).__name__] = (inner, getattr(inner, "p", p), position)
    return found


@pytest.mark.parametrize("aug", ["v1", "v2"])
def test_spec_is_the_cpu_transform(aug):
    """Every distribution the batched path draws from is the CPU transform's own."""
    cfg = get_cfg()
    cfg.INPUT.AUG, cfg.INPUT.SIZE, cfg.INPUT.CROP_SCALE = aug, 64, (0.3, 0.9)
    spec, ops = augment_spec(cfg), _cpu_ops(aug)
    crop = ops["RandomResizedCrop"][0]
    assert spec.size == 64 and spec.scale == tuple(crop.scale) == (0.3, 0.9)
    assert spec.ratio == pytest.approx(crop.ratio)
    jitter, jitter_p, jitter_at = ops["ColorJitter"]
    b, c, s, h = spec.jitter
    assert tuple(jitter.brightness) == pytest.approx((1 - b, 1 + b))
    assert tuple(jitter.contrast) == pytest.approx((1 - c, 1 + c))
    assert tuple(jitter.saturation) == pytest.approx((1 - s, 1 + s))
    assert tuple(jitter.hue) == pytest.approx((-h, h))
    assert spec.jitter_p == jitter_p
    _, gray_p, gray_at = ops["RandomGrayscale"]
    assert spec.gray_p == gray_p and spec.gray_first == (gray_at < jitter_at)
    assert spec.flip_p == ops["RandomHorizontalFlip"][1]
    if "PILGaussianBlur" in ops:
        blur, blur_p, _ = ops["PILGaussianBlur"]
        assert isinstance(blur, PILGaussianBlur)
        assert spec.blur_p == blur_p and spec.blur_sigma == blur.sigma
    else:
        assert spec.blur_p == 0
    cfg.INPUT.HFLIP = False
    assert augment_spec(cfg).flip_p == 0.0 and "RandomHorizontalFlip" not in _cpu_ops(aug, False)


def test_parameters_differ_across_the_batch():
    """One draw per crop, not one per batch: crops, factors, orders and sigmas all vary."""
    n = 64
    params = sample_params(torch.full((n,), 100), torch.full((n,), 120), AugmentSpec(32), _gen())
    assert len(params) == n
    assert len({tuple(box) for box in params.boxes.tolist()}) > n // 2
    assert len(set(params.factors[:, 0].tolist())) == n
    assert len({tuple(order) for order in params.order.tolist()}) > 5
    assert len(set(params.sigma[params.sigma > 0].tolist())) > 10
    for flag in (params.jitter, params.gray, params.flip):
        assert 0 < int(flag.sum()) < n


def test_parameter_distributions_match_the_cpu_ranges():
    """Many draws: every value inside the CPU transform's range, rates and means where expected."""
    n, spec = 20000, AugmentSpec(32)
    heights, widths = torch.full((n,), 200), torch.full((n,), 300)
    params = sample_params(heights, widths, spec, _gen(1))
    top, left, h, w = params.boxes.T.double()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 200).all() and (left + w <= 300).all()
    area = h * w / (200 * 300)
    # Integer rounding of the sides widens the ranges by about one pixel.
    assert area.min() > 0.2 - 0.01 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() > 3 / 4 - 0.02 and aspect.max() < 4 / 3 + 0.02
    f = params.factors
    for column in range(3):
        assert 0.6 <= f[:, column].min() and f[:, column].max() <= 1.4
        assert f[:, column].mean() == pytest.approx(1.0, abs=0.01)
    assert -0.1 <= f[:, 3].min() and f[:, 3].max() <= 0.1
    assert f[:, 3].mean() == pytest.approx(0.0, abs=0.003)
    assert params.jitter.float().mean() == pytest.approx(0.8, abs=0.015)
    assert params.gray.float().mean() == pytest.approx(0.2, abs=0.015)
    assert params.flip.float().mean() == pytest.approx(0.5, abs=0.015)
    blurred = params.sigma[params.sigma > 0]
    assert len(blurred) / n == pytest.approx(0.5, abs=0.015)
    assert 0.1 <= blurred.min() and blurred.max() <= 2.0
    assert blurred.mean() == pytest.approx(1.05, abs=0.02)
    # Each op comes first in a quarter of the orders (uniform random permutations).
    first = torch.bincount(params.order[:, 0], minlength=4).float() / n
    assert torch.allclose(first, torch.full((4,), 0.25), atol=0.015)


@pytest.mark.parametrize("size", [(200, 300), (20, 400)])
def test_crop_boxes_follow_torchvision(size):
    """Same area and aspect distribution as RandomResizedCrop.get_params, including the
    centre-crop fallback that very elongated images hit."""
    n, spec = 4000, AugmentSpec(32)
    height, width = size
    ours = sample_crop_boxes(torch.full((n,), height), torch.full((n,), width), spec, _gen(2))
    torch.manual_seed(2)
    image = torch.zeros(1, height, width)
    theirs = torch.tensor(
        [
            T.RandomResizedCrop.get_params(image, list(spec.scale), list(spec.ratio))
            for _ in range(n)
        ]
    )
    for stat in (_mean_area, _mean_log_aspect):
        assert stat(ours, height * width) == pytest.approx(stat(theirs, height * width), abs=0.02)
    if height == 20:  # no try fits: the same centre crop, clamped to the ratio range, each time
        assert (ours == theirs[0]).all()


def _mean_area(boxes: torch.Tensor, image_area: int) -> float:
    return float((boxes[:, 2] * boxes[:, 3]).double().mean() / image_area)


def _mean_log_aspect(boxes: torch.Tensor, image_area: int) -> float:
    return float(torch.log(boxes[:, 3] / boxes[:, 2]).mean())


def _fixed_params() -> AugmentParams:
    """Four crops that between them exercise every op, order and skip."""
    return AugmentParams(
        boxes=torch.tensor([[3, 5, 30, 40], [0, 0, 48, 56], [10, 20, 20, 20], [7, 2, 41, 33]]),
        jitter=torch.tensor([True, True, False, True]),
        factors=torch.tensor(
            [
                [0.7, 1.3, 0.6, 0.08],
                [1.4, 0.6, 1.3, -0.1],
                [1.1, 1.1, 1.1, 0.05],
                [0.9, 1.2, 0.8, 0.0],
            ]
        ),
        order=torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2], [2, 3, 0, 1]]),
        gray=torch.tensor([False, True, False, True]),
        sigma=torch.tensor([0.0, 1.3, 2.0, 0.1]),
        flip=torch.tensor([True, False, True, False]),
    )


def _reference(image: torch.Tensor, params: AugmentParams, spec: AugmentSpec, row: int):
    """Row ``row`` through torchvision.transforms.v2.functional, one op at a time."""
    top, left, h, w = params.boxes[row].tolist()
    x = TF.resized_crop(image.float(), top, left, h, w, [spec.size, spec.size], antialias=True)
    x = (x / 255).clamp(0, 1)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)

    def jitter(x):
        if params.jitter[row]:
            for op in params.order[row].tolist():
                x = adjust[op](x, float(params.factors[row, op]))
        return x

    def gray(x):
        return TF.rgb_to_grayscale(x, 3) if params.gray[row] else x

    x = jitter(gray(x)) if spec.gray_first else gray(jitter(x))
    sigma = float(params.sigma[row])
    if sigma > 0:
        k = 2 * blur_radius(spec) + 1
        x = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    if params.flip[row]:
        x = TF.horizontal_flip(x)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


@pytest.mark.parametrize("gray_first", [False, True])
def test_fixed_parameters_give_the_torchvision_output(gray_first):
    """For the same parameters every row equals torchvision's functional ops applied in the CPU
    transform's order (crop, jitter in the row's order, grey, blur, flip, normalise)."""
    generator = _gen(3)
    image = torch.randint(0, 256, (3, 48, 56), dtype=torch.uint8, generator=generator)
    spec, params = AugmentSpec(24, gray_first=gray_first), _fixed_params()
    out = augment([image], [0, 0, 0, 0], params, spec)
    for row in range(4):
        expected = _reference(image, params, spec, row)
        torch.testing.assert_close(out[row], expected, atol=2e-5, rtol=0)


def test_crops_of_interleaved_sources_keep_their_rows():
    """Crops are made image by image but come back in row order, each from its own source."""
    generator = _gen(6)
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator)
        for h, w in ((48, 56), (50, 60))
    ]
    boxes = torch.tensor([[3, 5, 30, 40], [0, 0, 48, 56], [10, 20, 20, 20], [7, 2, 41, 33]])
    sources = [1, 0, 1, 0]
    out = resized_crops(images, sources, boxes, 24)
    for row, source in enumerate(sources):
        top, left, h, w = boxes[row].tolist()
        expected = TF.resized_crop(
            images[source].float(), top, left, h, w, [24, 24], antialias=True
        )
        torch.testing.assert_close(out[row], (expected / 255).clamp(0, 1), atol=2e-6, rtol=0)


def test_two_crops_shapes_dtypes_and_ranges():
    """Images of any size in, two float32 batches of normalised crops out, and the views differ."""
    generator = _gen(4)
    sizes = [(40, 60), (64, 32), (33, 33)]
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes
    ]
    query, key = two_crops(images, AugmentSpec(24), _gen(5))
    assert query.shape == key.shape == (3, 3, 24, 24)
    assert query.dtype == key.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for view in (query, key):
        pixels = view * std + mean
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert not torch.allclose(query, key)
    again = two_crops(images, AugmentSpec(24), _gen(5))
    assert torch.equal(again[0], query) and torch.equal(again[1], key)


def test_blur_kernel_covers_three_sigma():
    assert blur_radius(AugmentSpec(32)) == math.ceil(3 * 2.0)
