"""VOC2007 image classification data: ``voc_2007_cls_trainval`` / ``voc_2007_cls_test`` under
``DATASETS.ROOT/VOC2007``, read from the per-class lists ``ImageSets/Main/<class>_<split>.txt``
(one ``<image id> <label>`` line per image, label 1 present, -1 absent, 0 only difficult
objects of the class); their row in the task table (scored by the linear-SVM protocol of
:mod:`unimoco.transfer.voc07_svm`, not by an evaluator).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets.pascal_voc import CLASS_NAMES
from detectron2.evaluation import DatasetEvaluator

from unimoco.transfer.datasets import ROOT_LAYOUTS, RootLayout, _unregister
from unimoco.transfer.errors import DatasetError
from unimoco.transfer.tasks import Task, register_task

EVALUATOR_TYPE = "voc07_cls"
# name -> split of VOC2007.
CLS_SPLITS = {"voc_2007_cls_trainval": "trainval", "voc_2007_cls_test": "test"}
# The labels of the per-class lists: present, absent, only difficult objects of the class.
POSITIVE, NEGATIVE, DIFFICULT = 1, -1, 0


def class_list_file(meta: Metadata, class_name: str) -> Path:
    """``<dirname>/ImageSets/Main/<class>_<split>.txt``: the labels of one class."""
    return Path(meta.dirname) / "ImageSets" / "Main" / f"{class_name}_{meta.split}.txt"


def load_voc_cls(name: str) -> list[dict]:
    """The images of data set ``name``: ``{"file_name", "image_id", "labels"}`` with ``labels`` an
    int8 array of 1 / -1 / 0 per class, in the order of ``thing_classes``; every class list must
    name the same images, and every image must exist."""
    meta = MetadataCatalog.get(name)
    per_class = [_read_class_list(class_list_file(meta, c)) for c in meta.thing_classes]
    image_ids = list(per_class[0])
    for class_name, labels in zip(meta.thing_classes[1:], per_class[1:]):
        if labels.keys() != per_class[0].keys():
            extra = sorted(labels.keys() ^ per_class[0].keys())[0]
            raise DatasetError(
                f"{class_list_file(meta, class_name)} and "
                f"{class_list_file(meta, meta.thing_classes[0])} list different images "
                f"(e.g. {extra!r}); every class list of a split names the same images"
            )
    images = Path(meta.dirname) / "JPEGImages"
    dicts = []
    for image_id in image_ids:
        file_name = images / f"{image_id}.jpg"
        if not file_name.is_file():
            raise DatasetError(f"data set {name!r}: {file_name} does not exist")
        row = np.array([labels[image_id] for labels in per_class], dtype=np.int8)
        dicts.append({"file_name": str(file_name), "image_id": image_id, "labels": row})
    return dicts


def _read_class_list(path: Path) -> dict[str, int]:
    labels = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(
                f"{path}, line {number}: {line.strip()!r}; expected '<image id> <label>'"
            )
        if fields[1] not in ("1", "-1", "0"):
            raise DatasetError(
                f"{path}, line {number}: label {fields[1]!r} of image {fields[0]!r}; expected "
                "1 (present), -1 (absent) or 0 (difficult only)"
            )
        labels[fields[0]] = int(fields[1])
    if not labels:
        raise DatasetError(f"{path} lists no images")
    return labels


def register_voc07_cls_root(root: Path) -> None:
    """Register ``voc_2007_cls_trainval`` / ``voc_2007_cls_test`` under ``root/VOC2007``."""
    for name, split in CLS_SPLITS.items():
        _unregister(name)
        DatasetCatalog.register(name, lambda name=name: load_voc_cls(name))
        MetadataCatalog.get(name).set(
            thing_classes=list(CLASS_NAMES),
            dirname=str(Path(root) / "VOC2007"),
            split=split,
            year=2007,
            evaluator_type=EVALUATOR_TYPE,
        )


def _missing(meta: Metadata) -> list[Path]:
    images = Path(meta.dirname) / "JPEGImages"
    lists = [class_list_file(meta, c) for c in meta.thing_classes]
    return ([] if images.is_dir() else [images]) + [p for p in lists if not p.is_file()]


def _no_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    raise DatasetError(
        f"data set {dataset_name!r} is scored by the linear-SVM protocol on frozen features, "
        "not by an evaluator: set SVM.ENABLED True (configs classification/voc07_svm_R_50)"
    )


register_task(
    EVALUATOR_TYPE,
    Task(
        "classification (linear SVMs)",
        _no_evaluator,
        ("classification", "mAP"),
        num_classes_key="SVM.NUM_CLASSES",
        classes_field="thing_classes",
        missing_files=_missing,
    ),
)
ROOT_LAYOUTS.append(RootLayout(register_voc07_cls_root, tuple(CLS_SPLITS), "VOC2007/"))
