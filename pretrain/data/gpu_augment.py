"""The MoCo augmentation as batched tensor ops with per-sample parameters (GPU data path).

Each op matches its CPU counterpart (torchvision.transforms.v2.functional on float images in
[0, 1]) for the same parameters; the parameters come from ``augment_params.sample_params``.
The ops run on whatever device the images are on, CPU tensors included.

Written with torch ops rather than kornia (measured on CPU, see docs/benchmarks.md): kornia's
augmentations take one batch tensor of a common size, while decoded images differ in size, so
the crop could not come from kornia anyway; its ColorJitter draws one op order per batch, where
the reference draws one per image; and its per-call checks and parameter objects cost more than
the few fused ops below. The crop is one antialiased ``interpolate`` per crop (torchvision's own
resized_crop, so outputs agree exactly); ``roi_align`` does all crops in one kernel but averages
bin samples instead of antialiasing (outputs differ by up to 0.2), needs a common-size input and
measured slower on CPU; the loop's ~3 launches per crop run in the prefetch thread, overlapped
with the model step. Parameters reach the device through pinned memory, so no copy waits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .augment_params import AugmentParams, AugmentSpec, sample_params
from .transforms import IMAGENET_MEAN, IMAGENET_STD

# torchvision's rgb_to_grayscale weights (ITU-R 601-2).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def resized_crops(
    images: Sequence[torch.Tensor], sources: Sequence[int], boxes: torch.Tensor, size: int
) -> torch.Tensor:
    """Float (N, 3, size, size) in [0, 1]: crop ``boxes[i]`` of ``images[sources[i]]`` (uint8
    CHW), resized bilinearly with antialiasing.

    Each source image is converted to float once, however many crops it gives, and the crops are
    joined by one ``cat``: 3 ops per crop and 2 per image instead of 8 per crop, which on the GPU
    are kernel launches made by the prefetch thread (docs/benchmarks.md).
    """
    rows_of: dict[int, list[int]] = {}
    for row, source in enumerate(sources):
        rows_of.setdefault(source, []).append(row)
    boxes_list = boxes.tolist()
    crops: list[torch.Tensor] = [torch.empty(0)] * len(sources)
    for source, rows in rows_of.items():
        image = images[source][None].float()  # one float image alive at a time
        for row in rows:
            top, left, height, width = boxes_list[row]
            crops[row] = F.interpolate(
                image[..., top : top + height, left : left + width],
                size=(size, size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
    if not crops:
        return torch.empty(0, 3, size, size)
    return torch.cat(crops).div_(255.0).clamp_(0.0, 1.0)


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``; to CUDA through pinned memory, so the copy does not block."""
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


@functools.lru_cache(maxsize=8)
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = to_device(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), device)
    return mean, to_device(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), device)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return to_device(values.to(like.dtype), like.device).view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma (N, 1, H, W) of RGB images (N, 3, H, W)."""
    r, g, b = x.unbind(dim=1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1.0 - factor) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale every pixel by the sample's factor (blend with black)."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the sample's mean grey level."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, _per_sample(factor, x))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the sample's grey image."""
    return _blend(x, grayscale(x), _per_sample(factor, x))


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]) through HSV."""
    r, g, b = x.unbind(dim=1)
    value, _ = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(
        value == r,
        ((g - b) / safe).remainder(6.0),
        torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = (hue / 6.0 + _per_sample(shift, x)[:, 0]).remainder(1.0)
    saturation = chroma / torch.where(value > 0, value, torch.ones_like(value))
    # HSV -> RGB: channel n is v - v*s*clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6.
    offsets = torch.arange(5.0, 0.0, -2.0, device=x.device).view(1, 3, 1, 1)  # R, G, B
    k = (offsets + 6.0 * hue[:, None]).remainder(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return (value[:, None] * (1.0 - saturation[:, None] * ramp)).clamp_(0.0, 1.0)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """ColorJitter on the rows with ``params.jitter``, each in its own random op order.

    At each of the four positions the rows are grouped by the op they apply there, so every op
    runs once per row; the groups are known on the CPU and need no synchronisation.
    """
    active = params.jitter
    for position in range(4):
        for op_index, op in enumerate(_JITTER_OPS):
            rows = torch.nonzero(active & (params.order[:, position] == op_index))[:, 0]
            if len(rows) == 0:
                continue
            index = to_device(rows, x.device)
            x.index_copy_(0, index, op(x.index_select(0, index), params.factors[rows, op_index]))
    return x


def random_grayscale(x: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Grey (three equal channels) on the rows where ``gray`` is set."""
    mask = to_device(gray, x.device).view(-1, 1, 1, 1)
    return torch.where(mask, grayscale(x).expand_as(x), x)


def blur_radius(spec: AugmentSpec) -> int:
    """Half-width of the blur kernel: 3 σ of the largest σ (>99.7 % of the Gaussian's mass)."""
    return math.ceil(3.0 * spec.blur_sigma[1])


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussians (N, 2·radius + 1); σ = 0 gives the identity (a unit impulse)."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))[:, None]
    kernels = torch.exp(-0.5 * (offsets / safe) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    impulse = (offsets == 0).float().expand_as(kernels)
    return torch.where(sigma[:, None] > 0, kernels, impulse)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur, σ per row (0 = none), reflect padding as torchvision's."""
    n, c, h, w = x.shape
    kernels = to_device(gaussian_kernels(sigma, radius).to(x.dtype), x.device)
    weight = kernels.repeat_interleave(c, dim=0)[:, None, None, :]  # (N·C, 1, 1, K)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), weight, groups=n * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = F.conv2d(flat, weight.transpose(2, 3), groups=n * c)
    return flat.reshape(n, c, h, w)


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the rows where ``flip`` is set."""
    mask = to_device(flip, x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation, as the CPU path's ``Normalize``."""
    mean, std = _mean_std(x.device)
    return x.sub_(mean).div_(std)


def augment(
    images: Sequence[torch.Tensor],
    sources: Sequence[int],
    params: AugmentParams,
    spec: AugmentSpec,
) -> torch.Tensor:
    """Normalised float crops (N, 3, size, size): crop ``images[sources[i]]`` and augment it with
    row i of ``params``, in the order of the CPU transform of ``spec``."""
    x = resized_crops(images, sources, params.boxes, spec.size)
    if spec.gray_first:
        x = color_jitter(random_grayscale(x, params.gray), params)
    else:
        x = random_grayscale(color_jitter(x, params), params.gray)
    if spec.blur_p > 0:
        x = gaussian_blur(x, params.sigma, blur_radius(spec))
    return normalize(random_flip(x, params.flip))


def two_crops(
    images: Sequence[torch.Tensor], spec: AugmentSpec, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The query and key views of a batch of uint8 CHW RGB images: two independent draws each."""
    n = len(images)
    heights = torch.tensor([image.shape[-2] for image in images] * 2)
    widths = torch.tensor([image.shape[-1] for image in images] * 2)
    params = sample_params(heights, widths, spec, gen)
    views = augment(images, list(range(n)) * 2, params, spec)
    return views[:n], views[n:]
