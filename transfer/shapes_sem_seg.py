"""The generated shapes scenes as a semantic segmentation data set: class-index PNGs (0
background, 1-10 the shape classes) in ``VOC2007/SegmentationClass`` of a shapes detection
export, derived from its instance masks and annotations (object k of an annotation is value k of
its ``SegmentationObject`` PNG), so that an existing export gains them without re-rendering."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from unimoco.pretrain.data.atomic import build_folder_atomically
from unimoco.pretrain.data.shapes import SHAPE_CLASSES
from unimoco.transfer.sem_seg_data import register_sem_seg_list
from unimoco.transfer.shapes_detection import ShapesDetection

SHAPES_SEM_SEG_CLASSES = ("background", *SHAPE_CLASSES)
# name -> the export's VOC split list (ImageSets/Main).
SHAPES_SEM_SEG = {"shapes_sem_seg_train": "trainval", "shapes_sem_seg_test": "test"}


def semantic_labels(instance_png: Path, annotation: Path) -> np.ndarray:
    """The class-index map of one scene: 1 + the class of the object each pixel belongs to."""
    objects = ET.parse(annotation).getroot().findall("object")
    lookup = np.zeros(256, dtype=np.uint8)  # instance value -> class index (0: background)
    for k, obj in enumerate(objects, start=1):
        lookup[k] = SHAPE_CLASSES.index(obj.findtext("name")) + 1
    with Image.open(instance_png) as png:
        return lookup[np.asarray(png)]


def export_shapes_sem_seg(paths: ShapesDetection) -> Path:
    """Write ``SegmentationClass/<id>.png`` for every scene of the export, once (atomically);
    returns the folder."""
    voc = paths.voc_dir

    def fill(folder: Path) -> None:
        for instance_png in sorted((voc / "SegmentationObject").glob("*.png")):
            labels = semantic_labels(instance_png, voc / "Annotations" / f"{instance_png.stem}.xml")
            Image.fromarray(labels, "L").save(folder / instance_png.name)

    return build_folder_atomically(voc / "SegmentationClass", fill)


def register_shapes_sem_seg(paths: ShapesDetection) -> None:
    """Register ``shapes_sem_seg_{train,test}`` over the export (its labels written if needed)."""
    labels = export_shapes_sem_seg(paths)
    for name, split in SHAPES_SEM_SEG.items():
        split_file = paths.voc_dir / "ImageSets" / "Main" / f"{split}.txt"
        register_sem_seg_list(name, paths.image_dir, labels, split_file, SHAPES_SEM_SEG_CLASSES)
