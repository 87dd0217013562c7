"""The generated shapes scenes written out as a detection data set, in VOC and COCO layout.

One export holds both layouts over the same JPEGs:
``VOC2007/{JPEGImages,Annotations,SegmentationObject,ImageSets/Main}`` (boxes, and instance
masks as VOC palette PNGs) and ``annotations/instances_{train,val}.json`` (boxes and RLE masks).
Train and test scenes come from separate streams (``split_seed``), so they never overlap.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from unimoco.pretrain.data.atomic import build_folder_atomically
from unimoco.pretrain.data.shapes import (
    SHAPE_CLASSES,
    Scene,
    default_shapes_root,
    render_scene,
    split_seed,
)

# Our split -> the scene stream it is drawn from (the same streams as the pretraining data).
_STREAMS = {"train": "train", "test": "val"}
# VOC ImageSets/Main lists: train and trainval hold the training scenes, val and test the rest.
_IMAGE_SETS = {"train": "train", "trainval": "train", "val": "test", "test": "test"}


@dataclass(frozen=True)
class ShapesDetection:
    """Where one export lives: the VOC folder and the COCO jsons (images in JPEGImages)."""

    root: Path
    voc_dir: Path
    coco_train_json: Path
    coco_val_json: Path
    image_dir: Path

    @classmethod
    def at(cls, root: Path) -> ShapesDetection:
        """The layout of an export whose top folder is ``root``."""
        voc = root / "VOC2007"
        annotations = root / "annotations"
        return cls(
            root,
            voc,
            annotations / "instances_train.json",
            annotations / "instances_val.json",
            voc / "JPEGImages",
        )


def export_shapes_detection(
    num_train: int, num_test: int, size: int, seed: int, root: str | Path | None = None
) -> ShapesDetection:
    """Render the scenes and write both layouts under ``root`` (default: the shapes cache), once:
    a temporary sibling is renamed into place, so an existing export is complete and reused."""
    if num_train < 1 or num_test < 1:
        raise ValueError(
            f"shapes detection: num_train = {num_train}, num_test = {num_test}; "
            "expected at least one image each"
        )
    base = Path(root).expanduser() if root else default_shapes_root()
    final = base / "detection" / f"s{seed}-px{size}-n{num_train}-{num_test}"
    build_folder_atomically(
        final,
        lambda folder: _write_export(
            ShapesDetection.at(folder), {"train": num_train, "test": num_test}, size, seed
        ),
    )
    return ShapesDetection.at(final)


def _write_export(out: ShapesDetection, counts: dict[str, int], size: int, seed: int) -> None:
    for sub in ("JPEGImages", "Annotations", "SegmentationObject", "ImageSets/Main"):
        (out.voc_dir / sub).mkdir(parents=True)
    out.coco_train_json.parent.mkdir()
    ids: dict[str, list[str]] = {}
    for split, count in counts.items():
        stream = split_seed(seed, _STREAMS[split])
        ids[split] = [f"{split}_{index:06d}" for index in range(count)]
        coco = _coco_skeleton()
        for index, image_id in enumerate(ids[split]):
            scene = render_scene(stream, index, size, mode="detection")
            scene.image.save(out.image_dir / f"{image_id}.jpg", quality=95)
            _voc_xml(image_id, scene).write(out.voc_dir / "Annotations" / f"{image_id}.xml")
            _instance_png(scene).save(out.voc_dir / "SegmentationObject" / f"{image_id}.png")
            _add_coco_image(coco, index + 1, f"{image_id}.jpg", scene)
        json_file = out.coco_train_json if split == "train" else out.coco_val_json
        json_file.write_text(json.dumps(coco))
    for image_set, split in _IMAGE_SETS.items():
        lines = "\n".join(ids[split]) + "\n"
        (out.voc_dir / "ImageSets" / "Main" / f"{image_set}.txt").write_text(lines)


def _voc_xml(image_id: str, scene: Scene) -> ET.ElementTree:
    """A VOC annotation; boxes in VOC's 1-based inclusive pixel indices."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*scene.image.size, 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for inst in scene.instances:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = SHAPE_CLASSES[inst.class_id]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = (round(v) for v in inst.box)  # x1, y1 exclusive = 1-based inclusive
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
            ET.SubElement(box, tag).text = str(value)
    return ET.ElementTree(root)


def _instance_png(scene: Scene) -> Image.Image:
    """VOC SegmentationObject: pixel value k marks the k-th object of the annotation."""
    width, height = scene.image.size
    labels = np.zeros((height, width), dtype=np.uint8)
    for k, inst in enumerate(scene.instances, start=1):
        labels[inst.mask] = k
    png = Image.fromarray(labels, "P")
    palette = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    palette[0] = 0
    png.putpalette(palette.flatten().tolist())
    return png


def _coco_skeleton() -> dict:
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPE_CLASSES)]
    return {"images": [], "annotations": [], "categories": categories}


def _add_coco_image(coco: dict, image_id: int, file_name: str, scene: Scene) -> None:
    width, height = scene.image.size
    coco["images"].append(
        {"id": image_id, "file_name": file_name, "width": width, "height": height}
    )
    for inst in scene.instances:
        rle = mask_util.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
        x0, y0, x1, y1 = inst.box
        coco["annotations"].append(
            {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": inst.class_id + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(inst.mask.sum()),
                "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            }
        )
