"""PASCAL VOC 2012 semantic segmentation under ``DATASETS.ROOT``: ``voc_2012_sem_seg_train_aug``
(10,582 images: VOC2012 train + SBD train/val, minus VOC2012 val), ``voc_2012_sem_seg_train`` and
``voc_2012_sem_seg_val`` (1,449 images), over ``VOC2012/JPEGImages``,
``VOC2012/SegmentationClassAug/<id>.png`` (index PNGs: 0 background, 1-20 the classes, 255
ignored) and ``VOC2012/ImageSets/Segmentation/<split>.txt``; ``unimoco prepare-voc-seg`` writes
the masks and ``train_aug.txt`` from VOC2012 and SBD."""

from __future__ import annotations

from pathlib import Path

from detectron2.data.datasets.pascal_voc import CLASS_NAMES

from unimoco.transfer.datasets import ROOT_LAYOUTS, RootLayout
from unimoco.transfer.sem_seg_data import register_sem_seg_list

# 21 classes: background first, then VOC's 20 in detectron2's order.
VOC_SEM_SEG_CLASSES = ("background", *CLASS_NAMES)
VOC_SEM_SEG_SPLITS = {
    "voc_2012_sem_seg_train_aug": "train_aug",
    "voc_2012_sem_seg_train": "train",
    "voc_2012_sem_seg_val": "val",
}
LABEL_FOLDER = "SegmentationClassAug"
PREPARE_HINT = (
    "write index PNGs with 'unimoco prepare-voc-seg --voc-root VOCdevkit/VOC2012 "
    "--sbd-root benchmark_RELEASE/dataset'"
)


def register_voc_sem_seg_root(root: Path) -> None:
    """Register the VOC 2012 semantic segmentation names under ``root/VOC2012``."""
    voc = Path(root) / "VOC2012"
    for name, split in VOC_SEM_SEG_SPLITS.items():
        register_sem_seg_list(
            name,
            voc / "JPEGImages",
            voc / LABEL_FOLDER,
            voc / "ImageSets" / "Segmentation" / f"{split}.txt",
            VOC_SEM_SEG_CLASSES,
            label_hint=PREPARE_HINT,
        )


ROOT_LAYOUTS.append(RootLayout(register_voc_sem_seg_root, tuple(VOC_SEM_SEG_SPLITS), "VOC2012/"))
