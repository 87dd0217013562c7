"""The detectron2 trainer of the detect command: the evaluator picked from the data set, precise
BN before every evaluation (``TEST.PRECISE_BN``), weights loaded without running their code, and
a clean stop on SIGTERM / SIGINT with a checkpoint that ``--resume`` continues from."""

from __future__ import annotations

import json
import math
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, PascalVOCDetectionEvaluator
from detectron2.utils import comm

import unimoco.transfer.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from unimoco import __version__
from unimoco.pretrain.engine.preemption import Preempted, StopSignal
from unimoco.transfer.checkpoint import SafeDetectionCheckpointer
from unimoco.transfer.datasets import DatasetError
from unimoco.transfer.files import write_atomic
from unimoco.transfer.progress import ProgressHook

FINAL_METRICS = "final_metrics.json"


class COCOEvaluatorNoDetections(COCOEvaluator):
    """``COCOEvaluator`` that scores a model with no detections at all 0 AP (detectron2 says NaN,
    which hides a broken model behind a missing number)."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None:
            results = {metric: 0.0 for metric in results}
        return results


def build_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str | None = None):
    """VOC07 11-point AP for ``pascal_voc`` data sets; COCO box (and mask if MODEL.MASK_ON) AP
    with the official pycocotools code for ``coco`` ones."""
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    if kind == "coco":
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluatorNoDetections(
            dataset_name, tasks=tasks, output_dir=output_dir, use_fast_impl=False
        )
    raise DatasetError(
        f"data set {dataset_name!r} has evaluator_type {kind!r}; expected 'pascal_voc' or 'coco'"
    )


class PreemptionHook(HookBase):
    """After each iteration: when a rank got SIGTERM / SIGINT, save ``model_<iter>.pth`` with the
    trainer's checkpointer (as the periodic checkpointer does, so that ``--resume`` starts at the
    next iteration) and stop with :class:`Preempted`."""

    def __init__(self) -> None:
        self.stop = StopSignal()

    def before_train(self) -> None:
        self.stop.install()

    def after_train(self) -> None:
        self.stop.restore()

    def after_step(self) -> None:
        requested = self.stop.requested
        if comm.get_world_size() > 1:
            requested = any(comm.all_gather(requested))
        if not requested:
            return
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        self.trainer.checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        raise Preempted(
            self.stop.number,
            f"stopped by {self.stop.name} after iteration {iteration + 1}: checkpoint "
            f"{Path(self.trainer.cfg.OUTPUT_DIR) / name}.pth written; run again with --resume "
            "to continue",
        )


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` with our evaluators, safe checkpoint loading, a
    progress bar and a clean stop on SIGTERM / SIGINT."""

    def build_hooks(self) -> list:
        # The checkpoint hook captures self.checkpointer: swap in the safe one first.
        self.checkpointer = SafeDetectionCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        return [ProgressHook(), *super().build_hooks(), PreemptionHook()]

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, folder)

    @property
    def last_results(self) -> Mapping[str, Any]:
        """The results of the last evaluation ({} before any)."""
        return getattr(self, "_last_eval_results", None) or {}


def write_final_metrics(cfg: CfgNode, results: Mapping[str, Any]) -> Path:
    """``OUTPUT_DIR/final_metrics.json``: ``{"results": {dataset: {task: {metric: value}}}}``
    plus the weights, iterations and unimoco version; NaN (no ground truth for a class) is
    written as null."""
    if len(cfg.DATASETS.TEST) == 1 and cfg.DATASETS.TEST[0] not in results:
        results = {cfg.DATASETS.TEST[0]: results}  # detectron2 unwraps a single data set
    payload = {
        "unimoco_version": __version__,
        "weights": cfg.MODEL.WEIGHTS,
        "max_iter": cfg.SOLVER.MAX_ITER,
        "results": _plain(results),
    }
    path = Path(cfg.OUTPUT_DIR) / FINAL_METRICS
    write_atomic(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    value = float(value)
    return None if math.isnan(value) else value
