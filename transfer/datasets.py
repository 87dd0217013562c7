"""Dataset registration for the detect command: real data under a user's root, extra COCO
jsons, and the generated shapes scenes; then a check that the files are there.

detectron2 registers its builtin names (``voc_2007_trainval``, ``coco_2017_train``, ...) at
import time under ``$DETECTRON2_DATASETS`` (default ``./datasets``). Every layout in
:data:`ROOT_LAYOUTS` (detectron2's names and ours, e.g. VOC semantic segmentation) is registered
again under ``DATASETS.ROOT`` (or that same default), with detectron2's layout below it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.pascal_voc import register_pascal_voc

from unimoco.pretrain.data.shapes import SHAPE_CLASSES
from unimoco.transfer.errors import DatasetError
from unimoco.transfer.shapes_detection import ShapesDetection, export_shapes_detection
from unimoco.transfer.shapes_sem_seg import SHAPES_SEM_SEG, register_shapes_sem_seg
from unimoco.transfer.tasks import task_of

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


__all__ = ["DatasetError", "ROOT_LAYOUTS", "RootLayout", "register_datasets", "check_dataset"]


@dataclass(frozen=True)
class RootLayout:
    """Data sets that live at fixed places below one root folder (detectron2's layout)."""

    # root -> None: (re-)registers the names under that root.
    register: Callable[[Path], None]
    names: tuple[str, ...]
    # The folders below the root, for the error that names a missing one ("VOC2007/, VOC2012/").
    folders: str


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


# Every root layout; modules that add data sets at fixed places append theirs.
ROOT_LAYOUTS: list[RootLayout] = [
    RootLayout(register_voc_root, tuple(VOC_SPLITS), "VOC2007/, VOC2012/"),
    RootLayout(register_coco_root, tuple(COCO_SPLITS), "coco/"),
]


def default_root() -> Path:
    """Where detectron2 looks for its builtin data sets: ``$DETECTRON2_DATASETS`` or ./datasets."""
    return Path(os.getenv("DETECTRON2_DATASETS", "datasets"))


def register_datasets(cfg: CfgNode) -> None:
    """Register what ``cfg`` asks for and check that the train and test data sets exist."""
    root = Path(cfg.DATASETS.ROOT) if cfg.DATASETS.ROOT else default_root()
    for layout in ROOT_LAYOUTS:
        layout.register(root)
    for entry in cfg.DATASETS.EXTRA_COCO:
        parts = [part.strip() for part in entry.split(",")]
        if len(parts) != 3 or not all(parts):
            raise DatasetError(
                f"DATASETS.EXTRA_COCO entry {entry!r}: expected 'NAME,JSON_FILE,IMAGE_ROOT'"
            )
        register_coco_json(*parts)
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    if any(name in SHAPES_VOC or name in SHAPES_COCO or name in SHAPES_SEM_SEG for name in names):
        shapes = cfg.DATASETS.SHAPES
        paths = register_shapes(
            shapes.NUM_TRAIN, shapes.NUM_TEST, shapes.IMAGE_SIZE, shapes.SEED, shapes.ROOT or None
        )
        if any(name in SHAPES_SEM_SEG for name in names):  # class-index PNGs written on demand
            register_shapes_sem_seg(paths)
    for name in names:
        check_dataset(name)
    for name in names:
        task = task_of(name)
        classes = MetadataCatalog.get(name).get(task.classes_field)
        wanted = cfg
        for part in task.num_classes_key.split("."):
            wanted = wanted[part]
        if classes is not None and len(classes) != wanted:
            raise DatasetError(
                f"data set {name!r} has {len(classes)} classes but {task.num_classes_key} "
                f"= {wanted}"
            )


def known_names() -> list[str]:
    """Every data set name this module registers: the root layouts' and the shapes scenes'."""
    names = [name for layout in ROOT_LAYOUTS for name in layout.names]
    return names + [*SHAPES_VOC, *SHAPES_COCO, *SHAPES_SEM_SEG]


def check_dataset(name: str) -> None:
    """Raise a ``DatasetError`` naming the missing folder or file of data set ``name``."""
    if name not in DatasetCatalog.list():
        raise DatasetError(
            f"data set {name!r} is not registered; known names: {', '.join(known_names())}; "
            "or add one with DATASETS.EXTRA_COCO"
        )
    missing = task_of(name).missing_files(MetadataCatalog.get(name))
    if missing:
        hint = ""
        layout = next((layout for layout in ROOT_LAYOUTS if name in layout.names), None)
        if layout is not None:
            hint = (
                "; set DATASETS.ROOT (or $DETECTRON2_DATASETS) to the folder that holds "
                f"{layout.folders}"
            )
        raise DatasetError(f"data set {name!r}: {missing[0]} does not exist{hint}")


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
