"""Datasets: folder scanning, decoding every image kind, bad files, CIFAR / STL-10, builders."""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from unimoco.pretrain.config import get_cfg
from unimoco.pretrain.data.datasets import (
    STL10_CLASSES,
    DatasetError,
    ImageListDataset,
    Unreadable,
    build_dataset,
    cifar_dataset,
    collate_skip_bad,
    scan_image_folder,
    stl10_dataset,
)
from unimoco.pretrain.data.shapes import SHAPE_CLASSES, render_scene, split_seed


def rgb(seed: int = 0, size: int = 16) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_scan_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'} does not exist"):
        scan_image_folder(tmp_path / "nope")


def test_scan_root_without_class_folders(tmp_path):
    rgb().save(tmp_path / "loose.png")
    with pytest.raises(DatasetError, match="has no class subfolders"):
        scan_image_folder(tmp_path)


def test_scan_names_empty_class_folders(tmp_path):
    (tmp_path / "cat").mkdir()
    rgb().save(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"1 class folders hold no images .*: dog$"):
        scan_image_folder(tmp_path)


def test_scan_layout_is_sorted_recursive_and_filtered(tmp_path):
    for rel in ["b/2.png", "b/1.JPG", "a/sub/deep.jpeg", "a/x.webp", "a/.hidden.png", "a/._x.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "a" / "readme.txt").write_text("")
    (tmp_path / ".git").mkdir()
    samples, classes = scan_image_folder(tmp_path)
    assert classes == ["a", "b"]
    assert samples == [("a/sub/deep.jpeg", 0), ("a/x.webp", 0), ("b/1.JPG", 1), ("b/2.png", 1)]


def write_image_kinds(root: Path) -> None:
    (root / "kinds").mkdir(parents=True)
    rgb(1).save(root / "kinds" / "rgb.jpg", quality=95)
    rgb(2).convert("L").save(root / "kinds" / "grey.png")
    rgba = rgb(3).convert("RGBA")
    rgba.putalpha(100)
    rgba.save(root / "kinds" / "rgba.png")
    rgb(4).convert("CMYK").save(root / "kinds" / "cmyk.jpg")
    Image.fromarray(np.full((16, 16), 0x8000, np.uint16)).save(root / "kinds" / "deep16.png")
    rgb(5).convert("P").save(root / "kinds" / "palette.png")
    palette = rgb(6).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "kinds" / "palette_alpha.png", transparency=0)
    rgb(7).save(root / "kinds" / "plain.bmp")
    rgb(8).convert("L").save(root / "kinds" / "grey.tiff")


def test_every_image_kind_loads_as_8bit_rgb(tmp_path):
    write_image_kinds(tmp_path)
    dataset = ImageListDataset.from_folder(tmp_path)
    assert len(dataset) == 9
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.mode == "RGB" and image.size == (16, 16), dataset.samples[index]
        assert target == 0
    deep = dataset[dataset.sample_ids.index("kinds/deep16.png")][0]
    assert np.asarray(deep)[0, 0].tolist() == [127, 127, 127]  # 32768 / 257, not saturated
    grey = np.asarray(dataset[dataset.sample_ids.index("kinds/grey.png")][0])
    assert np.array_equal(grey[..., 0], np.asarray(rgb(2).convert("L")))


def test_transform_and_targets_are_applied(tmp_path):
    write_image_kinds(tmp_path)
    dataset = ImageListDataset.from_folder(tmp_path, transform=torchvision.transforms.ToTensor())
    dataset.targets = [-1] * len(dataset)
    image, target = dataset[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and target == -1
    assert dataset.root == tmp_path and dataset.classes == ["kinds"]


def write_bad_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "garbage.png").write_bytes(b"\x89PNG this is not really a png" * 4)
    buffer = io.BytesIO()
    rgb(9, 64).save(buffer, "JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    rgb(10, 64).save(buffer, "PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    # A tiny PNG whose header claims 20000 x 20000 pixels: PIL's decompression-bomb guard refuses
    # it before allocating anything.
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    huge = bytearray(buffer.getvalue())
    huge[16:24] = struct.pack(">II", 20000, 20000)
    huge[29:33] = struct.pack(">I", zlib.crc32(bytes(huge[12:29])))
    (folder / "huge.png").write_bytes(bytes(huge))


def test_undecodable_files_are_named_and_warned_about(tmp_path, caplog):
    (tmp_path / "good").mkdir()
    rgb().save(tmp_path / "good" / "ok.png")
    write_bad_files(tmp_path / "bad")
    dataset = ImageListDataset.from_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="unimoco.data"):
        items = [dataset[i] for i in range(len(dataset))]
    bad = [sid for sid, item in zip(dataset.sample_ids, items) if isinstance(item, Unreadable)]
    assert all(
        item == Unreadable(str(tmp_path / sid))
        for sid, item in zip(dataset.sample_ids, items)
        if sid in bad
    )
    assert sorted(bad) == [
        "bad/empty.jpg",
        "bad/garbage.png",
        "bad/huge.png",
        "bad/truncated.jpg",
        "bad/truncated.png",
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "unimoco.data"]
    assert len(messages) == 5
    assert all(any(name in m for m in messages) for name in ["empty.jpg", "truncated.png"])
    assert any("huge.png (DecompressionBombError" in m for m in messages)

    (tmp_path / "good" / "ok.png").unlink()  # a file that vanished after the scan
    assert dataset[dataset.sample_ids.index("good/ok.png")] == Unreadable(
        str(tmp_path / "good/ok.png")
    )


def test_collate_skips_bad_items():
    crops = [[torch.full((3, 4, 4), float(i)), torch.zeros(3, 4, 4)] for i in range(3)]
    batch = [(crops[0], 5), Unreadable("a.jpg"), (crops[1], -1), Unreadable("b.png"), (crops[2], 2)]
    images, targets, bad = collate_skip_bad(batch)
    assert bad == ["a.jpg", "b.png"]
    assert isinstance(images, list) and len(images) == 2
    assert images[0].shape == (3, 3, 4, 4) and images[0][:, 0, 0, 0].tolist() == [0, 1, 2]
    assert targets.dtype == torch.int64 and targets.tolist() == [5, -1, 2]

    images, targets, bad = collate_skip_bad([(torch.ones(3, 2, 2), 1)])
    assert images.shape == (1, 3, 2, 2) and targets.tolist() == [1] and bad == []

    images, targets, bad = collate_skip_bad([Unreadable("x"), Unreadable("y"), Unreadable("z")])
    assert images.numel() == 0 and targets.numel() == 0 and targets.dtype == torch.int64
    assert bad == ["x", "y", "z"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(root: Path, per_batch: int, monkeypatch) -> np.ndarray:
    """Tiny CIFAR-10 python files; torchvision's md5 table is pointed at them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6 * per_batch, 3072), dtype=np.uint8)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        rows = slice(i * per_batch, (i + 1) * per_batch)
        labels = [(i * per_batch + j) % 10 for j in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data[rows], "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)]}, f)
    cls = torchvision.datasets.CIFAR10
    table = [[name, md5(folder / name)] for name in names]
    monkeypatch.setattr(cls, "train_list", table[:5])
    monkeypatch.setattr(cls, "test_list", table[5:])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")})
    return data


def test_cifar10_reader(tmp_path, monkeypatch):
    data = write_cifar10(tmp_path, 4, monkeypatch)
    train = cifar_dataset(tmp_path, "cifar10", train=True)
    assert len(train) == 20 and train.targets == [i % 10 for i in range(20)]
    assert train.classes[:2] == ["class0", "class1"] and train.sample_ids[:3] == ["0", "1", "2"]
    image, target = train[7]
    assert target == 7 and image.mode == "RGB" and image.size == (32, 32)
    assert np.array_equal(np.asarray(image), data[7].reshape(3, 32, 32).transpose(1, 2, 0))

    train.targets[7] = -1  # a labeled subset replaces the targets returned
    assert train[7][1] == -1

    cfg = get_cfg()
    cfg.DATA.NAME, cfg.DATA.ROOT = "cifar10", str(tmp_path)
    val = build_dataset(cfg, "val", torchvision.transforms.ToTensor())
    image, target = val[0]
    assert len(val) == 4 and target == 0 and image.shape == (3, 32, 32)


def test_cifar10_missing_and_corrupt_files(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="data_batch_1..5") as err:
        cifar_dataset(tmp_path, "cifar10", train=True)
    assert str(tmp_path) in str(err.value) and "cifar-10-batches-py" in str(err.value)

    write_cifar10(tmp_path, 2, monkeypatch)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "ab") as f:
        f.write(b"\0")  # corrupt one batch after its md5 was recorded
    with pytest.raises(DatasetError, match="md5"):
        cifar_dataset(tmp_path, "cifar10", train=True)


def test_cifar100_reader(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(3 * 3072, dtype=np.int64).astype(np.uint8).reshape(3, 3072)
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": [99, 0, 42], "coarse_labels": [1, 2, 3]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(cls, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "meta")})
    dataset = cifar_dataset(tmp_path, "cifar100", train=True)
    assert dataset.targets == [99, 0, 42] and len(dataset.classes) == 100


def write_stl10(root: Path, monkeypatch, class_names: bool) -> dict[str, np.ndarray]:
    """Tiny STL-10 binaries (column-major 3x96x96, labels 1-based)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {
        k: rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        for k, n in [("train", 3), ("unlabeled", 2), ("test", 2)]
    }
    for key, pixels in images.items():
        pixels.transpose(0, 3, 2, 1).tofile(folder / f"{key}_X.bin")
    np.array([1, 10, 5], np.uint8).tofile(folder / "train_y.bin")
    np.array([2, 3], np.uint8).tofile(folder / "test_y.bin")
    if class_names:
        (folder / "class_names.txt").write_text("\n".join(f"n{i}" for i in range(10)) + "\n")
    cls = torchvision.datasets.STL10
    table = {p.name: [p.name, md5(p)] for p in folder.iterdir()}
    train = ["train_X.bin", "train_y.bin", "unlabeled_X.bin"]
    monkeypatch.setattr(cls, "train_list", [table[name] for name in train])
    monkeypatch.setattr(cls, "test_list", [table["test_X.bin"], table["test_y.bin"]])
    return images


def test_stl10_reader(tmp_path, monkeypatch):
    images = write_stl10(tmp_path, monkeypatch, class_names=False)
    cfg = get_cfg()
    cfg.DATA.NAME, cfg.DATA.ROOT = "stl10", str(tmp_path)
    train = build_dataset(cfg, "train", None)
    assert train.targets == [0, 9, 4, -1, -1] and train.classes == list(STL10_CLASSES)
    assert train.sample_ids == ["0", "1", "2", "3", "4"]
    image, target = train[3]
    assert target == -1 and np.array_equal(np.asarray(image), images["unlabeled"][0])
    assert np.array_equal(np.asarray(train[1][0]), images["train"][1])

    test = stl10_dataset(tmp_path, "test")
    assert test.targets == [1, 2] and np.array_equal(np.asarray(test[1][0]), images["test"][1])


def test_stl10_class_names_file_and_missing_files(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="stl10_binary/train_X.bin") as err:
        stl10_dataset(tmp_path, "test")
    assert str(tmp_path) in str(err.value)
    write_stl10(tmp_path, monkeypatch, class_names=True)
    assert stl10_dataset(tmp_path, "test").classes == [f"n{i}" for i in range(10)]


def shapes_cfg(root: str):
    cfg = get_cfg()
    cfg.DATA.NAME, cfg.DATA.ROOT = "shapes", root
    cfg.DATA.SHAPES.NUM_TRAIN, cfg.DATA.SHAPES.NUM_VAL = 20, 10
    cfg.DATA.SHAPES.IMAGE_SIZE, cfg.DATA.SHAPES.SEED = 32, 4
    return cfg


def test_build_shapes_dataset(tmp_path):
    cfg = shapes_cfg(str(tmp_path))
    train = build_dataset(cfg, "train", torchvision.transforms.ToTensor())
    assert len(train) == 20 and train.classes == list(SHAPE_CLASSES)
    assert train.root == tmp_path / "s4-px32-n20" / "train"
    for index in (0, 13):
        image, target = train[index]
        path = train.sample_ids[index]
        scene = render_scene(split_seed(4, "train"), int(Path(path).stem), 32)
        assert target == scene.label and path.startswith(SHAPE_CLASSES[scene.label] + "/")
        assert image.shape == (3, 32, 32)
    val = build_dataset(cfg, "val", None)
    assert len(val) == 10 and val.classes == train.classes


def test_build_shapes_defaults_to_the_cache(unimoco_cache):
    dataset = build_dataset(shapes_cfg(""), "val", None)
    assert dataset.root == unimoco_cache / "shapes" / "s4-px32-n10" / "val"


def test_build_imagefolder_errors(tmp_path):
    cfg = get_cfg()
    cfg.DATA.NAME = "imagefolder"
    with pytest.raises(DatasetError, match="DATA.ROOT is empty"):
        build_dataset(cfg, "train", None)
    for split, classes in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            rgb().save(tmp_path / split / name / "x.png")
    cfg.DATA.ROOT = str(tmp_path / "train")
    assert build_dataset(cfg, "train", None).targets == [0, 1]
    with pytest.raises(DatasetError, match="DATA.VAL_ROOT is empty"):
        build_dataset(cfg, "val", None)
    cfg.DATA.VAL_ROOT = str(tmp_path / "val")
    with pytest.raises(DatasetError, match="only in val: c; only in train: b"):
        build_dataset(cfg, "val", None)
    with pytest.raises(ValueError, match="split = 'test'"):
        build_dataset(cfg, "test", None)
