"""``unimoco prepare-voc-seg``: the augmented VOC 2012 training set (train_aug) from VOC2012 and
SBD (Hariharan et al.'s Semantic Boundaries Dataset), in the layout ``voc_2012_sem_seg_*`` read.

Writes into the VOC2012 folder ``SegmentationClassAug/<id>.png`` (single-channel class-index
PNGs: 0 background, 1-20 the classes, 255 ignored) and ``ImageSets/Segmentation/train_aug.txt``
(SBD train + SBD val + VOC train, minus VOC val, deduplicated, sorted). An image annotated in
VOC2012 takes VOC's mask (the palette PNG's indices, with its 255 borders), otherwise SBD's
``cls/<id>.mat`` (``GTcls.Segmentation``). Existing files are kept, new ones written atomically.
An existing ``SegmentationClassAug`` folder of index PNGs (the widely shared one) works as is.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.io
from PIL import Image

from unimoco.pretrain.engine.command import Command
from unimoco.transfer.errors import DatasetError
from unimoco.transfer.files import write_atomic
from unimoco.transfer.sem_seg_data import IGNORE_LABEL, read_split
from unimoco.transfer.voc_seg import LABEL_FOLDER, VOC_SEM_SEG_CLASSES

VALID_LABELS = np.array([*range(len(VOC_SEM_SEG_CLASSES)), IGNORE_LABEL])


def train_aug_ids(voc_root: Path, sbd_root: Path) -> list[str]:
    """SBD train + SBD val + VOC2012 train, minus VOC2012 val; sorted, each once."""
    voc_lists = voc_root / "ImageSets" / "Segmentation"
    sbd = [*_ids(sbd_root / "train.txt"), *_ids(sbd_root / "val.txt")]
    return sorted(set(sbd + _ids(voc_lists / "train.txt")) - set(_ids(voc_lists / "val.txt")))


def read_voc_mask(path: Path) -> np.ndarray:
    """A VOC ``SegmentationClass`` PNG's class ids: the palette indices (or an L PNG's values)."""
    with Image.open(path) as png:
        if png.mode not in ("P", "L"):
            raise DatasetError(f"{path} is a {png.mode!r}-mode image; expected VOC's palette PNG")
        return np.asarray(png)


def read_sbd_mask(path: Path) -> np.ndarray:
    """An SBD ``cls/<id>.mat`` file's class ids (``GTcls.Segmentation``)."""
    try:
        gt = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"]
        return np.asarray(gt.Segmentation)
    except (KeyError, AttributeError, ValueError, OSError) as err:
        raise DatasetError(
            f"{path}: not an SBD GTcls file with a Segmentation field ({err})"
        ) from None


def prepare(voc_root: Path, sbd_root: Path) -> dict[str, int]:
    """Write the masks of train_aug, train and val and the train_aug list; returns how many
    files were written and kept."""
    for folder in (voc_root / "SegmentationClass", sbd_root / "cls"):
        if not folder.is_dir():
            raise DatasetError(f"{folder} does not exist")
    ids = train_aug_ids(voc_root, sbd_root)
    voc_lists = voc_root / "ImageSets" / "Segmentation"
    voc_ids = _ids(voc_lists / "train.txt") + _ids(voc_lists / "val.txt")
    wanted = sorted(set(ids) | set(voc_ids))
    counts = {"written": 0, "kept": 0}
    for image_id in wanted:
        out = voc_root / LABEL_FOLDER / f"{image_id}.png"
        if out.exists():
            counts["kept"] += 1
            continue
        labels = _labels(voc_root, sbd_root, image_id)
        write_atomic(out, lambda f, labels=labels: _save_png(labels, f))
        counts["written"] += 1
    split_file = voc_lists / "train_aug.txt"
    if split_file.exists():
        counts["kept"] += 1
    else:
        text = "".join(f"{image_id}\n" for image_id in ids).encode()
        write_atomic(split_file, lambda f: f.write(text))
        counts["written"] += 1
    return counts


def _labels(voc_root: Path, sbd_root: Path, image_id: str) -> np.ndarray:
    voc = voc_root / "SegmentationClass" / f"{image_id}.png"
    sbd = sbd_root / "cls" / f"{image_id}.mat"
    if voc.is_file():
        path, labels = voc, read_voc_mask(voc)
    elif sbd.is_file():
        path, labels = sbd, read_sbd_mask(sbd)
    else:
        raise DatasetError(f"no mask for {image_id!r}: neither {voc} nor {sbd} exists")
    bad = np.setdiff1d(np.unique(labels), VALID_LABELS)
    if bad.size:
        raise DatasetError(
            f"{path} holds label value(s) {', '.join(map(str, bad[:5]))}; expected 0-20 and 255"
        )
    return labels


def _save_png(labels: np.ndarray, f: BinaryIO) -> None:
    Image.fromarray(labels.astype(np.uint8), "L").save(f, format="PNG")


def _ids(split_file: Path) -> list[str]:
    if not split_file.is_file():
        raise DatasetError(f"{split_file} does not exist")
    return read_split(split_file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoco prepare-voc-seg",
        description="Write VOC2012/SegmentationClassAug (index PNGs) and "
        "ImageSets/Segmentation/train_aug.txt from VOC2012 and SBD; existing files are kept.",
        epilog="Exit status: 0 done; 2 bad input (a missing folder or list, an unreadable mask).",
    )
    parser.add_argument(
        "--voc-root", required=True, type=Path, help="VOCdevkit/VOC2012 (written into)"
    )
    parser.add_argument(
        "--sbd-root", required=True, type=Path, help="SBD's benchmark_RELEASE/dataset"
    )
    return parser


def main(argv: list[str]) -> int:
    """Run ``unimoco prepare-voc-seg --voc-root DIR --sbd-root DIR``; the exit status."""
    command = Command(
        "prepare-voc-seg",
        build_parser(),
        lambda args: None,
        _run,
        statuses={DatasetError: 2},
    )
    return command.main(argv)


def _run(args: argparse.Namespace, cfg: None) -> int:
    counts = prepare(args.voc_root, args.sbd_root)
    print(
        f"{args.voc_root / LABEL_FOLDER}: {counts['written']} file(s) written, "
        f"{counts['kept']} existing kept"
    )
    return 0
