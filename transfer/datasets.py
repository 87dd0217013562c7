"""Dataset registration for the detect command: real data under a user's root, extra COCO
jsons, and the generated shapes scenes; then a check that the files are there.

detectron2 registers its builtin names (``voc_2007_trainval``, ``coco_2017_train``, ...) at
import time under ``$DETECTRON2_DATASETS`` (default ``./datasets``); ``DATASETS.ROOT`` re-registers
the VOC and COCO 2017 names under another root, with the same layout below it.
"""

from __future__ import annotations

import os
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.pascal_voc import register_pascal_voc

from unimoco.pretrain.data.shapes import SHAPE_CLASSES
from unimoco.transfer.shapes_detection import ShapesDetection, export_shapes_detection

# name -> (folder below the root, split); detectron2's names and layout.
VOC_SPLITS = {
    f"voc_{year}_{split}": (f"VOC{year}", split)
    for year in (2007, 2012)
    for split in ("trainval", "train", "val")
} | {"voc_2007_test": ("VOC2007", "test")}
# The shapes scenes: name -> VOC split, and name -> which COCO json.
SHAPES_VOC = {"shapes_voc_train": "trainval", "shapes_voc_test": "test"}
SHAPES_COCO = {"shapes_coco_train": "train", "shapes_coco_val": "val"}
# name -> (image folder, json file) below the root.
COCO_SPLITS = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}


class DatasetError(ValueError):
    """A data set that is not registered or whose files are missing; names both."""


def register_voc_root(root: str | Path) -> None:
    """Register detectron2's VOC names under ``root`` (``root/VOC2007``, ``root/VOC2012``)."""
    for name, (folder, split) in VOC_SPLITS.items():
        _unregister(name)
        year = 2007 if "2007" in name else 2012
        register_pascal_voc(name, str(Path(root) / folder), split, year)
        MetadataCatalog.get(name).evaluator_type = "pascal_voc"


def register_coco_root(root: str | Path) -> None:
    """Register ``coco_2017_train`` / ``coco_2017_val`` under ``root`` (``root/coco/...``)."""
    for name, (images, json_file) in COCO_SPLITS.items():
        _unregister(name)
        metadata = _get_builtin_metadata("coco")
        register_coco_instances(
            name, metadata, str(Path(root) / json_file), str(Path(root) / images)
        )


def register_coco_json(name: str, json_file: str | Path, image_root: str | Path) -> None:
    """Register a COCO-format json and its image folder as data set ``name`` (COCO evaluation)."""
    _unregister(name)
    register_coco_instances(name, {}, str(json_file), str(image_root))


def register_shapes(
    num_train: int, num_test: int, size: int, seed: int, root: str | Path | None = None
) -> ShapesDetection:
    """Export the shapes scenes if needed and register ``shapes_voc_{train,test}`` and
    ``shapes_coco_{train,val}`` (VOC07 and COCO evaluation) over that export."""
    paths = export_shapes_detection(num_train, num_test, size, seed, root)
    for name, split in SHAPES_VOC.items():
        _unregister(name)
        register_pascal_voc(name, str(paths.voc_dir), split, 2007, SHAPE_CLASSES)
        MetadataCatalog.get(name).evaluator_type = "pascal_voc"
    for name, split in SHAPES_COCO.items():
        json_file = paths.coco_train_json if split == "train" else paths.coco_val_json
        register_coco_json(name, json_file, paths.image_dir)
        MetadataCatalog.get(name).thing_classes = list(SHAPE_CLASSES)
    return paths


def register_datasets(cfg: CfgNode) -> None:
    """Register what ``cfg`` asks for and check that the train and test data sets exist."""
    if cfg.DATASETS.ROOT:
        register_voc_root(cfg.DATASETS.ROOT)
        register_coco_root(cfg.DATASETS.ROOT)
    for entry in cfg.DATASETS.EXTRA_COCO:
        parts = [part.strip() for part in entry.split(",")]
        if len(parts) != 3 or not all(parts):
            raise DatasetError(
                f"DATASETS.EXTRA_COCO entry {entry!r}: expected 'NAME,JSON_FILE,IMAGE_ROOT'"
            )
        register_coco_json(*parts)
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    if any(name in SHAPES_VOC or name in SHAPES_COCO for name in names):
        shapes = cfg.DATASETS.SHAPES
        register_shapes(
            shapes.NUM_TRAIN, shapes.NUM_TEST, shapes.IMAGE_SIZE, shapes.SEED, shapes.ROOT or None
        )
    for name in names:
        check_dataset(name)
    for name in cfg.DATASETS.TRAIN:
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise DatasetError(
                f"data set {name!r} has {len(classes)} classes but MODEL.ROI_HEADS.NUM_CLASSES "
                f"= {cfg.MODEL.ROI_HEADS.NUM_CLASSES}"
            )


def check_dataset(name: str) -> None:
    """Raise a ``DatasetError`` naming the missing folder or file of data set ``name``."""
    if name not in DatasetCatalog.list():
        raise DatasetError(
            f"data set {name!r} is not registered; known names include voc_2007_trainval, "
            "voc_2007_test, voc_2012_trainval, coco_2017_train, coco_2017_val, "
            f"{', '.join([*SHAPES_VOC, *SHAPES_COCO])}, or add one with DATASETS.EXTRA_COCO"
        )
    meta = MetadataCatalog.get(name)
    kind = meta.get("evaluator_type")
    if kind == "pascal_voc":
        voc = Path(meta.dirname)
        wanted = [voc / "Annotations", voc / "JPEGImages", voc / "ImageSets" / "Main"]
        missing = [folder for folder in wanted if not folder.is_dir()]
        if not missing and not (voc / "ImageSets" / "Main" / f"{meta.split}.txt").is_file():
            missing = [voc / "ImageSets" / "Main" / f"{meta.split}.txt"]
    elif kind == "coco":
        missing = [Path(meta.json_file)] if not os.path.isfile(meta.json_file) else []
        missing += [Path(meta.image_root)] if not os.path.isdir(meta.image_root) else []
    else:
        missing = []
    if missing:
        hint = ""
        if name in VOC_SPLITS or name in COCO_SPLITS:
            hint = (
                "; set DATASETS.ROOT (or $DETECTRON2_DATASETS) to the folder that holds "
                "VOC2007/, VOC2012/ and coco/"
            )
        raise DatasetError(f"data set {name!r}: {missing[0]} does not exist{hint}")


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
