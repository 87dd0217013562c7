"""COCO person keypoint detection: ``keypoints_coco_2017_train`` / ``keypoints_coco_2017_val``
registered under ``DATASETS.ROOT`` in detectron2's layout, with detectron2's person keypoint
metadata (names, flip map, connection rules), and the task row whose headline is keypoint AP.

The data sets get their own ``evaluator_type`` ("coco_keypoints"): the COCO row's evaluator and
file check, with keypoint AP (COCO OKS) instead of box AP as the number they are summarised by.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from unimoco.transfer.datasets import ROOT_LAYOUTS, RootLayout, _unregister
from unimoco.transfer.tasks import TASKS, register_task

# name -> (image folder, json file) below the root; detectron2's names and layout.
KEYPOINT_SPLITS = {
    "keypoints_coco_2017_train": (
        "coco/train2017",
        "coco/annotations/person_keypoints_train2017.json",
    ),
    "keypoints_coco_2017_val": ("coco/val2017", "coco/annotations/person_keypoints_val2017.json"),
}
EVALUATOR_TYPE = "coco_keypoints"


def register_keypoints_root(root: str | Path) -> None:
    """Register the COCO person keypoint splits under ``root`` (``root/coco/...``)."""
    for name, (images, json_file) in KEYPOINT_SPLITS.items():
        _unregister(name)
        json_path, image_root = str(Path(root) / json_file), str(Path(root) / images)
        # register_coco_instances fixes evaluator_type to "coco", which metadata cannot change.
        DatasetCatalog.register(
            name, functools.partial(load_coco_json, json_path, image_root, name)
        )
        MetadataCatalog.get(name).set(
            json_file=json_path,
            image_root=image_root,
            evaluator_type=EVALUATOR_TYPE,
            **_get_builtin_metadata("coco_person"),
        )


register_task(
    EVALUATOR_TYPE,
    dataclasses.replace(TASKS["coco"], label="keypoint detection", headline=("keypoints", "AP")),
)
ROOT_LAYOUTS.append(RootLayout(register_keypoints_root, tuple(KEYPOINT_SPLITS), "coco/"))
