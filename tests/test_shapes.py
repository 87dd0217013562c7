"""The generated shapes data: determinism, masks and boxes, balance, the cached ImageFolder."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unimoco.pretrain.data.shapes import (
    SHAPE_CLASSES,
    default_shapes_root,
    ensure_shapes_imagefolder,
    render_scene,
    split_seed,
)

SIZE = 48


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_classes_are_sorted_so_folder_order_matches_labels():
    assert list(SHAPE_CLASSES) == sorted(SHAPE_CLASSES)
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES) == 10


@pytest.mark.parametrize("mode", ["classification", "detection"])
def test_render_is_deterministic(mode):
    a, b = render_scene(3, 7, SIZE, mode), render_scene(3, 7, SIZE, mode)
    assert a.image.mode == "RGB" and a.image.size == (SIZE, SIZE)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.label == b.label
    assert [i.class_id for i in a.instances] == [i.class_id for i in b.instances]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.instances, b.instances))
    assert [i.box for i in a.instances] == [i.box for i in b.instances]

    for other in (render_scene(3, 8, SIZE, mode), render_scene(4, 7, SIZE, mode)):
        assert not np.array_equal(np.asarray(a.image), np.asarray(other.image))


@pytest.mark.parametrize("mode", ["classification", "detection"])
def test_masks_are_visible_disjoint_and_boxes_tight(mode):
    min_visible = max(8, round(0.004 * SIZE * SIZE))
    for index in range(30):
        scene = render_scene(0, index, SIZE, mode)
        assert scene.instances
        covered = np.zeros((SIZE, SIZE), dtype=bool)
        for inst in scene.instances:
            assert inst.mask.dtype == bool and inst.mask.shape == (SIZE, SIZE)
            assert inst.mask.sum() >= min_visible
            assert inst.box == tight_box(inst.mask)
            assert all(isinstance(v, float) for v in inst.box)
            assert not (covered & inst.mask).any(), "visible masks overlap"
            covered |= inst.mask
        if mode == "detection":
            assert 1 <= len(scene.instances) <= 5
            largest = max(scene.instances, key=lambda inst: inst.mask.sum())
            assert scene.label == largest.class_id
        else:
            # The dominant shape is drawn last, large and unoccluded.
            dominant = scene.instances[-1]
            assert dominant.class_id == scene.label
            assert dominant.mask.sum() >= 0.05 * SIZE * SIZE
            assert all(inst.class_id != scene.label for inst in scene.instances[:-1])


def test_detection_shapes_are_at_least_a_tenth_of_the_image():
    for index in range(30):
        last = render_scene(1, index, 64, "detection").instances[-1]  # never occluded
        x0, y0, x1, y1 = last.box
        assert max(x1 - x0, y1 - y0) >= 0.1 * 64


def test_occlusion_hides_earlier_shapes():
    # Later shapes are painted over earlier ones: some later instance shows inside the box of
    # an earlier one, and there the earlier mask holds none of its pixels (disjointness above).
    overlaps = 0
    for index in range(40):
        inst = render_scene(2, index, SIZE, "detection").instances
        for i, earlier in enumerate(inst):
            x0, y0, x1, y1 = (int(v) for v in earlier.box)
            overlaps += any(later.mask[y0:y1, x0:x1].any() for later in inst[i + 1 :])
    assert overlaps > 0


def test_classification_labels_are_balanced():
    counts = collections.Counter(render_scene(5, i, 32).label for i in range(100))
    assert counts == {c: 10 for c in range(len(SHAPE_CLASSES))}
    # Each block of 10 indices is a permutation of the classes, shuffled by the seed.
    orders = [[render_scene(seed, i, 32).label for i in range(10)] for seed in range(3)]
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1


def test_render_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode = 'segmentation'"):
        render_scene(0, 0, SIZE, "segmentation")
    with pytest.raises(ValueError, match="size = 8"):
        render_scene(0, 0, 8)
    with pytest.raises(ValueError, match="seed = -1"):
        render_scene(-1, 0, SIZE)


def files_and_mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_ensure_imagefolder_layout_and_content(tmp_path):
    folder = ensure_shapes_imagefolder(tmp_path, "train", 20, 32, 0)
    assert folder == tmp_path / "s0-px32-n20" / "train"
    assert sorted(p.name for p in folder.iterdir()) == list(SHAPE_CLASSES)
    files = sorted(folder.glob("*/*.png"))
    assert sorted(p.name for p in files) == [f"{i:06d}.png" for i in range(20)]
    for path in files:
        index = int(path.stem)
        scene = render_scene(split_seed(0, "train"), index, 32)
        assert path.parent.name == SHAPE_CLASSES[scene.label]
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(image), np.asarray(scene.image))
    assert [p.name for p in folder.parent.iterdir()] == ["train"]  # no temp folder left


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.tobytes()


def test_train_and_val_are_different_images(tmp_path):
    train = ensure_shapes_imagefolder(tmp_path, "train", 10, 32, 0)
    val = ensure_shapes_imagefolder(tmp_path, "val", 10, 32, 0)
    assert train.parent == val.parent
    train_pixels = {pixels(p) for p in train.glob("*/*.png")}
    val_pixels = {pixels(p) for p in val.glob("*/*.png")}
    assert len(train_pixels) == len(val_pixels) == 10
    assert not train_pixels & val_pixels


def test_ensure_imagefolder_is_idempotent(tmp_path):
    folder = ensure_shapes_imagefolder(tmp_path, "train", 10, 32, 1)
    before = files_and_mtimes(folder)
    assert ensure_shapes_imagefolder(str(tmp_path), "train", 10, 32, 1) == folder
    assert files_and_mtimes(folder) == before


def test_leftover_temp_folder_does_not_count_as_done(tmp_path):
    key = tmp_path / "s0-px32-n10"
    crashed = key / ".train.tmp-crashed"
    (crashed / "circle").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(crashed / "circle" / "000000.png")

    folder = ensure_shapes_imagefolder(tmp_path, "train", 10, 32, 0)
    assert folder == key / "train"
    assert len(list(folder.glob("*/*.png"))) == 10


def test_ensure_imagefolder_needs_one_image_per_class(tmp_path):
    with pytest.raises(ValueError, match="num_images = 5; expected at least 10"):
        ensure_shapes_imagefolder(tmp_path, "train", 5, 32, 0)
    assert not any(tmp_path.iterdir())


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIMOCO_CACHE", str(tmp_path / "cache"))
    assert default_shapes_root() == tmp_path / "cache" / "shapes"
    monkeypatch.delenv("UNIMOCO_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_shapes_root() == tmp_path / "home" / ".cache" / "unimoco" / "shapes"
    assert os.environ.get("UNIMOCO_CACHE") is None


def test_parallel_generation_writes_the_same_files(tmp_path):
    """Several processes write byte-identical files to one process's (scenes are pure)."""
    one = ensure_shapes_imagefolder(tmp_path / "one", "train", 24, 32, 0, "jpeg", workers=1)
    three = ensure_shapes_imagefolder(tmp_path / "three", "train", 24, 32, 0, "jpeg", workers=3)
    files = sorted(p.relative_to(one).as_posix() for p in one.glob("*/*.jpg"))
    assert files == sorted(p.relative_to(three).as_posix() for p in three.glob("*/*.jpg"))
    assert len(files) == 24
    assert all((one / name).read_bytes() == (three / name).read_bytes() for name in files)
    with pytest.raises(ValueError, match="workers = 0; expected at least 1"):
        ensure_shapes_imagefolder(tmp_path / "zero", "train", 24, 32, 0, workers=0)
