"""Fashion-MNIST from its IDX files: the reader, the subsets, the errors, a pretraining run.

The tests write tiny IDX files of their own (the real ones come from a Debian package)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unimoco.cli import main as cli_main
from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.data.datasets import DatasetError, build_dataset
from unimoco.pretrain.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    IdxFormatError,
    balanced_subset,
    load_split,
    read_idx,
)

PER_CLASS = {"train": 6, "val": 3}


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """An IDX file as published: 00 00 <type 0x08> <ndim>, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_fashion_root(root: Path, compress: bool = True) -> dict[str, tuple[np.ndarray, ...]]:
    """Random 28x28 images, PER_CLASS of each class per split, in a shuffled order."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    names = {"train": ("train", "train"), "val": ("t10k", "t10k")}
    for split, per_class in PER_CLASS.items():
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        suffix = ".gz" if compress else ""
        stem = names[split][0]
        write_idx(root / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(root / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
        written[split] = (images, labels)
    load_split.cache_clear()
    return written


def fashion_cfg(root: Path, *opts: str):
    return load_cfg(None, ["DATA.NAME", "fashion_mnist", "DATA.ROOT", str(root), *opts])


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_returns_the_array_written(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array, compress)
    assert np.array_equal(read_idx(path), array)


def test_read_idx_names_the_file_on_bad_bytes(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(IdxFormatError, match=r"bad-idx3-ubyte: not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx3-ubyte"
    write_idx(short, np.zeros((2, 28, 28), np.uint8), compress=False)
    short.write_bytes(short.read_bytes()[:-5])
    with pytest.raises(IdxFormatError, match=r"short-idx3-ubyte: 1579 bytes; expected 1584"):
        read_idx(short)


@pytest.mark.parametrize("compress", [True, False])
def test_whole_splits_are_the_published_images_resized_to_rgb(tmp_path, compress):
    written = make_fashion_root(tmp_path / "fm", compress)
    cfg = fashion_cfg(tmp_path / "fm", "DATA.FASHION_MNIST.SIZE", "28")
    for split in ("train", "val"):
        dataset = build_dataset(cfg, split)
        images, labels = written[split]
        assert len(dataset) == len(labels) and dataset.classes == list(FASHION_MNIST_CLASSES)
        index = 4
        image, label = dataset[index]
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (28, 28)
        assert np.array_equal(np.asarray(image)[..., 1], images[index]) and label == labels[index]
        assert dataset.sample_ids[index] == f"{index:05d}"
    resized = build_dataset(fashion_cfg(tmp_path / "fm"), "train")[0][0]
    assert resized.size == (32, 32)
    expected = Image.fromarray(written["train"][0][0]).resize((32, 32), Image.BILINEAR)
    assert np.array_equal(np.asarray(resized)[..., 0], np.asarray(expected))


def test_subsets_are_class_balanced_seeded_and_named_by_published_index(tmp_path):
    _, labels = make_fashion_root(tmp_path / "fm")["train"]
    opts = ("DATA.FASHION_MNIST.NUM_TRAIN", "30", "DATA.FASHION_MNIST.NUM_TEST", "10")
    train = build_dataset(fashion_cfg(tmp_path / "fm", *opts), "train")
    val = build_dataset(fashion_cfg(tmp_path / "fm", *opts), "val")
    assert len(train) == 30 and len(val) == 10
    assert np.bincount(train.targets, minlength=10).tolist() == [3] * 10
    assert all(labels[int(i)] == t for i, t in zip(train.sample_ids, train.targets, strict=True))
    other = build_dataset(
        fashion_cfg(tmp_path / "fm", *opts, "DATA.FASHION_MNIST.SUBSET_SEED", "1"), "train"
    )
    assert train.sample_ids != other.sample_ids
    again = build_dataset(fashion_cfg(tmp_path / "fm", *opts), "train")
    assert train.sample_ids == again.sample_ids
    with pytest.raises(ValueError, match=r"needs 7 images of class"):
        balanced_subset(labels, 70, 0)


def test_missing_files_name_the_folder_and_the_package(tmp_path):
    with pytest.raises(
        DatasetError, match=r"DATA.ROOT = .*empty.*apt-get install -y dataset-fashion"
    ):
        build_dataset(fashion_cfg(tmp_path / "empty"), "train")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DATA.FASHION_MNIST.NUM_TRAIN", "15"),
        ("DATA.FASHION_MNIST.NUM_TRAIN", "60010"),
        ("DATA.FASHION_MNIST.NUM_TEST", "-10"),
        ("DATA.FASHION_MNIST.SIZE", "8"),
    ],
)
def test_bad_options_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key.rsplit(".", 1)[0]):
        load_cfg(None, ["DATA.NAME", "fashion_mnist", key, value])


def test_pretraining_and_knn_run_on_fashion_mnist(tmp_path):
    make_fashion_root(tmp_path / "fm")
    out = tmp_path / "run"
    opts = [
        "DATA.NAME", "fashion_mnist", "DATA.ROOT", str(tmp_path / "fm"), "DATA.NUM_WORKERS", "0",
        "DATA.LABEL_RATIO", "0.5", "MODEL.ARCH", "resnet18", "MODEL.CIFAR_STEM", "True",
        "INPUT.SIZE", "16", "MOCO.K", "32", "MOCO.BN_SPLITS", "2", "SOLVER.BATCH_SIZE", "8",
        "SOLVER.EPOCHS", "1", "LOG.PROGRESS", "off", "LOG.TENSORBOARD", "False",
        "OUTPUT_DIR", str(out),
    ]  # fmt: skip
    assert cli_main(["pretrain", *opts]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 60 // 8
    assert len((out / "labeled_subset.txt").read_text().split()) == 30
    assert cli_main(["knn", "--checkpoint", str(out / "checkpoint_final.pth"), *opts]) == 0
    assert 0.0 <= json.loads((out / "knn_metrics.json").read_text())["top1"] <= 100.0
