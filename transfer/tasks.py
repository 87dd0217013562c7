"""The transfer tasks, one row per kind of data set (detectron2's ``evaluator_type`` in the data
set's metadata): the evaluator that scores it, the headline metric that final_metrics.json and the
pipeline report lead with, the config key that must match the data set's class count, and, where
the task needs one, its training-time dataset mapper.

The trainer, the dataset check and the report all read this table; a new task is a row here, a
config and a dataset registration, not a branch in the trainer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, PascalVOCDetectionEvaluator

from unimoco.transfer.errors import DatasetError

EvaluatorBuilder = Callable[[CfgNode, str, str], DatasetEvaluator]


@dataclass(frozen=True)
class Task:
    """What one kind of data set needs from the transfer code."""

    # What the task is called in reports ("detection", "semantic segmentation", ...).
    label: str
    # (cfg, dataset name, output folder) -> the evaluator.
    build_evaluator: EvaluatorBuilder
    # (result group, metric) the task is summarised by, e.g. ("bbox", "AP"), ("sem_seg", "mIoU").
    headline: tuple[str, str]
    # The config key holding the class count, and the metadata list it must match.
    num_classes_key: str = "MODEL.ROI_HEADS.NUM_CLASSES"
    classes_field: str = "thing_classes"
    # cfg -> the training DatasetMapper (None: detectron2's default DatasetMapper(cfg, True)).
    build_train_mapper: Callable[[CfgNode], Any] | None = None
    # metadata -> the files / folders of the data set that do not exist (checked before training).
    missing_files: Callable[[Metadata], list[Path]] = lambda meta: []


class COCOEvaluatorNoDetections(COCOEvaluator):
    """``COCOEvaluator`` that scores a model with no detections at all 0 AP (detectron2 says NaN,
    which hides a broken model behind a missing number)."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None:
            results = {metric: 0.0 for metric in results}
        return results


def _missing_voc(meta: Metadata) -> list[Path]:
    voc = Path(meta.dirname)
    wanted = [voc / "Annotations", voc / "JPEGImages", voc / "ImageSets" / "Main"]
    missing = [folder for folder in wanted if not folder.is_dir()]
    split_file = voc / "ImageSets" / "Main" / f"{meta.split}.txt"
    return missing or ([] if split_file.is_file() else [split_file])


def _missing_coco(meta: Metadata) -> list[Path]:
    missing = [Path(meta.json_file)] if not os.path.isfile(meta.json_file) else []
    return missing + ([Path(meta.image_root)] if not os.path.isdir(meta.image_root) else [])


def _voc_detection(cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    return PascalVOCDetectionEvaluator(dataset_name)


def coco_tasks(cfg: CfgNode) -> tuple[str, ...]:
    """The COCO result groups a model produces: boxes, plus masks / keypoints when enabled."""
    return (
        ("bbox",)
        + (("segm",) if cfg.MODEL.MASK_ON else ())
        + (("keypoints",) if cfg.MODEL.KEYPOINT_ON else ())
    )


def _coco(cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    return COCOEvaluatorNoDetections(
        dataset_name,
        tasks=coco_tasks(cfg),
        output_dir=output_dir,
        use_fast_impl=False,
        kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
    )


# evaluator_type -> Task. Modules that add a kind of data set add its row with register_task.
TASKS: dict[str, Task] = {
    "pascal_voc": Task("detection", _voc_detection, ("bbox", "AP"), missing_files=_missing_voc),
    "coco": Task("detection", _coco, ("bbox", "AP"), missing_files=_missing_coco),
}


def register_task(evaluator_type: str, task: Task) -> None:
    """Add the row of one kind of data set to :data:`TASKS`."""
    TASKS[evaluator_type] = task


def task_of(dataset_name: str) -> Task:
    """The task of a registered data set, from its metadata's ``evaluator_type``."""
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind not in TASKS:
        raise DatasetError(
            f"data set {dataset_name!r} has evaluator_type {kind!r}; expected one of "
            f"{', '.join(sorted(TASKS))}"
        )
    return TASKS[kind]


def build_evaluator(
    cfg: CfgNode, dataset_name: str, output_dir: str | None = None
) -> DatasetEvaluator:
    """The evaluator of ``dataset_name``'s task, writing into ``output_dir`` (default
    ``OUTPUT_DIR/inference/<data set>``)."""
    folder = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    return task_of(dataset_name).build_evaluator(cfg, dataset_name, folder)


def headline(dataset_name: str, results: Mapping[str, Any]) -> dict[str, Any]:
    """``{"task", "metric", "value"}``: the number a task is summarised by, from its results
    (``{group: {metric: value}}``); value None when the evaluator did not report it."""
    task = task_of(dataset_name)
    group, metric = task.headline
    value = (results.get(group) or {}).get(metric)
    return {"task": task.label, "group": group, "metric": metric, "value": value}
