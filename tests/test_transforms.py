"""Augmentations: output contract, the exact MoCo v1 / v2 recipes, two crops, eval transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T
from torchvision.transforms import functional as F

from unimoco.pretrain.config import get_cfg
from unimoco.pretrain.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TwoCropsTransform,
    build_eval_transform,
    build_pretrain_transform,
    moco_v1_augmentation,
    moco_v2_augmentation,
)


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8), "RGB")


def force_every_random_op(compose: T.Compose) -> T.Compose:
    for op in compose.transforms:
        if hasattr(op, "p"):
            op.p = 1.0
    return compose


def crop(img: Image.Image, size: int, scale: tuple[float, float]) -> Image.Image:
    i, j, h, w = T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
    return F.resized_crop(img, i, j, h, w, [size, size], antialias=True)


def jitter(img: Image.Image, b: float, c: float, s: float, h: float) -> Image.Image:
    order, bf, cf, sf, hf = T.ColorJitter.get_params(
        [1 - b, 1 + b], [1 - c, 1 + c], [1 - s, 1 + s], [-h, h]
    )
    adjust = {
        0: (F.adjust_brightness, bf),
        1: (F.adjust_contrast, cf),
        2: (F.adjust_saturation, sf),
        3: (F.adjust_hue, hf),
    }
    for index in order.tolist():
        fn, factor = adjust[index]
        img = fn(img, factor)
    return img


def normalize(img: Image.Image) -> torch.Tensor:
    return F.normalize(F.to_tensor(img), list(IMAGENET_MEAN), list(IMAGENET_STD))


def manual_v2(img: Image.Image, size: int, scale: tuple[float, float]) -> torch.Tensor:
    """MoCo v2's recipe (docs/methods.md §1), drawing random numbers as torchvision does."""
    img = crop(img, size, scale)
    torch.rand(1)  # RandomApply's draw for the colour jitter
    img = jitter(img, 0.4, 0.4, 0.4, 0.1)
    torch.rand(1)  # RandomGrayscale's draw
    img = F.rgb_to_grayscale(img, num_output_channels=3)
    torch.rand(1)  # RandomApply's draw for the blur
    sigma = torch.empty(1).uniform_(0.1, 2.0).item()
    img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
    torch.rand(1)  # RandomHorizontalFlip's draw
    return normalize(F.hflip(img))


def manual_v1(img: Image.Image, size: int, scale: tuple[float, float]) -> torch.Tensor:
    img = crop(img, size, scale)
    torch.rand(1)
    img = F.rgb_to_grayscale(img, num_output_channels=3)
    img = jitter(img, 0.4, 0.4, 0.4, 0.4)
    torch.rand(1)
    return normalize(F.hflip(img))


@pytest.mark.parametrize(
    "build, manual", [(moco_v2_augmentation, manual_v2), (moco_v1_augmentation, manual_v1)]
)
def test_recipe_matches_a_manual_composition(image, build, manual):
    forced = force_every_random_op(build(32, scale=(0.3, 0.9)))
    for seed in range(3):
        torch.manual_seed(seed)
        expected = manual(image, 32, (0.3, 0.9))
        torch.manual_seed(seed)
        assert torch.equal(forced(image), expected)


@pytest.mark.parametrize("build", [moco_v1_augmentation, moco_v2_augmentation])
def test_augmentation_output(image, build):
    torch.manual_seed(0)
    out = build(32)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.min() < 0 < out.max()  # normalized, not in [0, 1]


def test_v2_probabilities_and_blur():
    ops = moco_v2_augmentation(224).transforms
    assert [type(op).__name__ for op in ops] == [
        "RandomResizedCrop",
        "RandomApply",
        "RandomGrayscale",
        "RandomApply",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
    ]
    assert (ops[1].p, ops[2].p, ops[3].p, ops[4].p) == (0.8, 0.2, 0.5, 0.5)
    blur = ops[3].transforms[0]
    assert blur.sigma == (0.1, 2.0)
    assert ops[0].scale == (0.2, 1.0)


def test_two_crops_differ(image):
    torch.manual_seed(0)
    q, k = TwoCropsTransform(moco_v2_augmentation(32))(image)
    assert q.shape == k.shape == (3, 32, 32)
    assert not torch.equal(q, k)


def test_build_pretrain_transform_reads_the_config(image):
    cfg = get_cfg()
    cfg.INPUT.AUG, cfg.INPUT.SIZE, cfg.INPUT.CROP_SCALE = "v1", 24, (0.5, 1.0)
    transform = build_pretrain_transform(cfg)
    assert isinstance(transform, TwoCropsTransform)
    first = transform.base.transforms[0]
    assert first.size == (24, 24) and first.scale == (0.5, 1.0)
    assert isinstance(transform.base.transforms[2], T.ColorJitter)
    assert [t.shape for t in transform(image)] == [(3, 24, 24), (3, 24, 24)]

    cfg.INPUT.AUG = "v3"
    with pytest.raises(ValueError, match="INPUT.AUG = 'v3'"):
        build_pretrain_transform(cfg)
    cfg.INPUT.AUG, cfg.INPUT.CROP_SCALE = "v2", (0.9, 0.2)
    with pytest.raises(ValueError, match=r"INPUT.CROP_SCALE = \(0.9, 0.2\)"):
        build_pretrain_transform(cfg)


def test_eval_transform(image):
    transform = build_eval_transform(32)
    assert [type(op).__name__ for op in transform.transforms[:2]] == ["Resize", "CenterCrop"]
    assert transform.transforms[0].size == 37  # round(32 * 256 / 224)
    assert build_eval_transform(224).transforms[0].size == 256
    out = transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, transform(image))
    resized = image.resize((37, 44), Image.BILINEAR)  # short side 40 -> 37, centre crop
    assert torch.equal(out, normalize(F.center_crop(resized, [32, 32])))


@pytest.mark.parametrize("aug", ["v1", "v2"])
@pytest.mark.parametrize("hflip", [True, False])
def test_hflip_switch(aug, hflip):
    """A white-left / black-right image keeps its left side brighter in every crop unless the
    flip is on, in which case about half the crops are mirrored."""
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16] = 255
    cfg = get_cfg()
    cfg.INPUT.AUG, cfg.INPUT.SIZE, cfg.INPUT.CROP_SCALE, cfg.INPUT.HFLIP = aug, 16, (1, 1), hflip
    transform = build_pretrain_transform(cfg).base
    torch.manual_seed(0)
    crops = [transform(Image.fromarray(pixels)) for _ in range(40)]
    mirrored = sum(bool(c[:, :, :8].mean() < c[:, :, 8:].mean()) for c in crops)
    assert (10 <= mirrored <= 30) if hflip else mirrored == 0
