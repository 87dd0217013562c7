"""Procedurally generated "shapes" images: the suite's embedded default data.

A scene is a pure function of (seed, index, size, mode), so any data set built from it is
reproducible without a download. One drawing routine makes both views: classification images
(one dominant textured shape over clutter) and detection scenes (occluding shapes with visible
masks and tight boxes).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .atomic import build_folder_atomically

# Alphabetical, so that ImageFolder's sorted class folders give the same indices as Scene.label.
SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "crescent",
    "cross",
    "diamond",
    "ellipse",
    "hexagon",
    "ring",
    "square",
    "star",
    "triangle",
)
MODES = ("classification", "detection")
MIN_SIZE = 24
# Shapes are drawn at this many times the image size and box-filtered down (antialiasing).
SUPERSAMPLE = 4

_MODE_TAG = {"classification": 0, "detection": 1}
# Below this many images per process, a folder is written by one process.
_IMAGES_PER_WORKER = 500
_LABEL_TAG = 2


@dataclass
class Instance:
    """One shape in a scene: its class, tight box (x0, y0, x1, y1; x1, y1 exclusive) and
    visible mask (bool, H x W)."""

    class_id: int
    box: tuple[float, float, float, float]
    mask: np.ndarray


@dataclass
class Scene:
    """A rendered RGB image, its shapes (drawing order) and its image-level label."""

    image: Image.Image
    instances: list[Instance]
    label: int


@dataclass(frozen=True)
class _Shape:
    class_id: int
    cx: float
    cy: float
    radius: float
    angle: float


def _ngon(n: int, radii: tuple[float, ...] = (1.0,), phase: float = 0.0) -> np.ndarray:
    """Vertices of a (star) polygon on the unit circle, radii alternating as given."""
    t = phase + 2 * np.pi * np.arange(n) / n
    r = np.resize(np.asarray(radii), n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(half_width: float) -> np.ndarray:
    w = half_width
    return np.array(
        [
            (w, 1),
            (w, w),
            (1, w),
            (1, -w),
            (w, -w),
            (w, -1),
            (-w, -1),
            (-w, -w),
            (-1, -w),
            (-1, w),
            (-w, w),
            (-w, 1),
        ],
        dtype=float,
    )


_DISC = _ngon(64)
# Per class: polygons in unit coordinates, each painted (255) or erased (0), in order.
_OUTLINES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_DISC, 255)],
    "crescent": [(_DISC, 255), (_DISC * 0.85 + (0.5, 0.0), 0)],
    "cross": [(_cross(0.32), 255)],
    "diamond": [(_ngon(4) * (1.0, 0.6), 255)],
    "ellipse": [(_DISC * (1.0, 0.55), 255)],
    "hexagon": [(_ngon(6), 255)],
    "ring": [(_DISC, 255), (_DISC * 0.55, 0)],
    "square": [(_ngon(4, phase=np.pi / 4), 255)],
    "star": [(_ngon(10, radii=(1.0, 0.45), phase=-np.pi / 2), 255)],
    "triangle": [(_ngon(3, phase=-np.pi / 2), 255)],
}


def _coverage(shape: _Shape, size: int) -> np.ndarray:
    """Fraction of each pixel the shape covers (H x W, float32 in [0, 1])."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    cos, sin = np.cos(shape.angle), np.sin(shape.angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    centre = np.array([shape.cx, shape.cy]) * s
    for unit, value in _OUTLINES[SHAPE_CLASSES[shape.class_id]]:
        points = unit @ rotation.T * (shape.radius * s) + centre
        draw.polygon([tuple(p) for p in points.tolist()], fill=value)
    return np.asarray(canvas.reduce(s), dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """Pixel coordinates (x, y), each H x W float32; read-only, shared between calls."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32)[::-1].copy()
    grid.flags.writeable = False
    return grid


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear 0 -> 1 ramp across the image in a random direction (H x W x 1)."""
    xx, yy = _grid(size)
    phi = rng.uniform(0, 2 * np.pi)
    u = xx * np.cos(phi) + yy * np.sin(phi)
    u = (u - u.min()) / max(float(np.ptp(u)), 1e-6)
    return u[..., None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random two-colour gradient with pixel noise (H x W x 3, float32)."""
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    ramp = _ramp(rng, size)
    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * rng.uniform(0, 12)
    return c0 + (c1 - c0) * ramp + noise


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray) -> np.ndarray:
    """A random colour, redrawn (a few times at most) until it stands out from ``against``."""
    best, best_dist = None, -1.0
    for _ in range(8):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        dist = float(np.linalg.norm(colour - against))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= 120:
            break
    return best


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    """A fill around ``colour``: solid, stripes, gradient or noise (H x W x 3, float32)."""
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(colour, (size, size, 3))
    if kind == 1:
        xx, yy = _grid(size)
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(0.06, 0.15) * size
        stripes = np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period) > 0
        other = colour * rng.uniform(0.3, 0.7)
        return np.where(stripes[..., None], colour, other)
    if kind == 2:
        other = rng.uniform(0, 255, 3).astype(np.float32)
        return colour + (other - colour) * 0.6 * _ramp(rng, size)
    return colour + rng.standard_normal((size, size, 3), dtype=np.float32) * 30


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _draw(
    rng: np.random.Generator, size: int, shapes: list[_Shape], min_visible: int
) -> tuple[Image.Image, list[Instance]]:
    """Paint ``shapes`` in order over a background; later shapes occlude earlier ones. Keeps
    the instances with at least ``min_visible`` visible pixels."""
    canvas = _background(rng, size)
    mean = canvas.reshape(-1, 3).mean(axis=0)
    masks = []
    for shape in shapes:
        alpha = _coverage(shape, size)
        fill = _texture(rng, size, _contrasting_colour(rng, mean))
        canvas = canvas + (fill - canvas) * alpha[..., None]
        masks.append(alpha >= 0.5)
    image = Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8), "RGB")

    instances = []
    covered = np.zeros((size, size), dtype=bool)
    for shape, mask in zip(reversed(shapes), reversed(masks)):
        visible = mask & ~covered
        covered |= mask
        if visible.sum() >= min_visible:
            instances.append(Instance(shape.class_id, _tight_box(visible), visible))
    return image, instances[::-1]


def _balanced_label(seed: int, index: int) -> int:
    """Each block of len(SHAPE_CLASSES) consecutive indices holds every class once, shuffled."""
    block, offset = divmod(index, len(SHAPE_CLASSES))
    order = np.random.default_rng([seed, _LABEL_TAG, block]).permutation(len(SHAPE_CLASSES))
    return int(order[offset])


def _classification_shapes(rng: np.random.Generator, size: int, label: int) -> list[_Shape]:
    """A few small distractors of other classes, then the large dominant shape on top."""
    others = [c for c in range(len(SHAPE_CLASSES)) if c != label]
    shapes = [
        _Shape(
            int(rng.choice(others)),
            rng.uniform(0, size),
            rng.uniform(0, size),
            rng.uniform(0.07, 0.14) * size,
            rng.uniform(0, 2 * np.pi),
        )
        for _ in range(rng.integers(2, 5))
    ]
    radius = rng.uniform(0.28, 0.45) * size
    cx, cy = rng.uniform(0.8 * radius, size - 0.8 * radius, 2)
    shapes.append(_Shape(label, cx, cy, radius, rng.uniform(0, 2 * np.pi)))
    return shapes


def _detection_shapes(rng: np.random.Generator, size: int) -> list[_Shape]:
    """1-5 shapes of random classes, 20-60 % of the image across, inside the frame."""
    shapes = []
    for _ in range(rng.integers(1, 6)):
        radius = rng.uniform(0.1, 0.3) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        shapes.append(
            _Shape(int(rng.integers(len(SHAPE_CLASSES))), cx, cy, radius, rng.uniform(0, 2 * np.pi))
        )
    return shapes


def render_scene(seed: int, index: int, size: int, mode: str = "classification") -> Scene:
    """Scene ``index`` of the stream ``seed``, ``size`` pixels square; deterministic in its
    arguments. Classification labels are balanced over every block of 10 indices."""
    if mode not in MODES:
        raise ValueError(f"render_scene: mode = {mode!r}; expected one of {', '.join(MODES)}")
    if size < MIN_SIZE:
        raise ValueError(f"render_scene: size = {size}; expected at least {MIN_SIZE} pixels")
    if seed < 0 or index < 0:
        raise ValueError(f"render_scene: seed = {seed}, index = {index}; expected non-negative")
    rng = np.random.default_rng([seed, _MODE_TAG[mode], index])
    min_visible = max(8, round(0.004 * size * size))
    if mode == "classification":
        label = _balanced_label(seed, index)
        image, instances = _draw(rng, size, _classification_shapes(rng, size, label), min_visible)
        return Scene(image, instances, label)
    image, instances = _draw(rng, size, _detection_shapes(rng, size), min_visible)
    # The last shape is never occluded and big enough, so there is always an instance.
    largest = max(instances, key=lambda inst: int(inst.mask.sum()))
    return Scene(image, instances, largest.class_id)


def split_seed(seed: int, split: str) -> int:
    """The scene stream of one split: train and val never share images."""
    if seed < 0:
        raise ValueError(f"shapes seed = {seed}; expected a non-negative integer")
    return seed * 2**32 + zlib.crc32(split.encode())


def _write_images(
    folder: Path, stream: int, indices: range, size: int, suffix: str, options: dict
) -> None:
    """Render and save the classification scenes ``indices`` of ``stream`` into ``folder``."""
    for index in indices:
        scene = render_scene(stream, index, size)
        scene.image.save(folder / SHAPE_CLASSES[scene.label] / f"{index:06d}{suffix}", **options)


def _generation_workers(num_images: int, workers: int | None) -> int:
    """Processes for writing ``num_images``; by default one per CPU (at most 16) and one per
    ``_IMAGES_PER_WORKER`` images, since a pool costs more than a small folder takes."""
    if workers is None:
        return max(1, min(os.cpu_count() or 1, 16, num_images // _IMAGES_PER_WORKER))
    if workers < 1:
        raise ValueError(f"shapes: workers = {workers}; expected at least 1")
    return min(workers, num_images)


def ensure_shapes_imagefolder(
    root: str | Path,
    split: str,
    num_images: int,
    size: int,
    seed: int,
    image_format: str = "png",
    workers: int | None = None,
) -> Path:
    """``<root>/s{seed}-px{size}-n{num_images}/<split>/<class>/<index:06d>.png``, generated on
    first use into a temporary sibling and renamed into place, so a folder there is complete.
    ``image_format`` "jpeg" writes ``.jpg`` files (quality 90) under ``...-n{num_images}-jpeg``.
    Large folders are written by ``workers`` processes (default: one per CPU, at most 16, for
    500 images or more); scenes are pure functions of their index, so the files do not depend
    on the count."""
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"shapes: image_format = {image_format!r}; expected png or jpeg")
    if num_images < len(SHAPE_CLASSES):
        raise ValueError(
            f"shapes {split}: num_images = {num_images}; expected at least "
            f"{len(SHAPE_CLASSES)} (one per class)"
        )
    processes = _generation_workers(num_images, workers)
    tag = "" if image_format == "png" else f"-{image_format}"
    final = Path(root).expanduser() / f"s{seed}-px{size}-n{num_images}{tag}" / split
    suffix, options = (".png", {}) if image_format == "png" else (".jpg", {"quality": 90})

    def fill(folder: Path) -> None:
        for name in SHAPE_CLASSES:
            (folder / name).mkdir()
        stream = split_seed(seed, split)
        if processes == 1:
            _write_images(folder, stream, range(num_images), size, suffix, options)
            return
        # Interleaved shares keep every process equally busy whatever the scenes cost.
        shares = [range(start, num_images, processes) for start in range(processes)]
        # fork where there is one: the children only draw and encode (PIL, numpy), and spawn
        # would re-run a user's script that lacks a main guard.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            jobs = [
                pool.submit(_write_images, folder, stream, share, size, suffix, options)
                for share in shares
            ]
            for job in jobs:
                job.result()

    return build_folder_atomically(final, fill)


def default_shapes_root() -> Path:
    """``$UNIMOCO_CACHE/shapes`` when the variable is set, else ``~/.cache/unimoco/shapes``."""
    cache = os.environ.get("UNIMOCO_CACHE")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache" / "unimoco"
    return base / "shapes"
