"""The detectron2 trainer of the detect command: the evaluator (and, where a task has one, the
training mapper) picked from the data set's row in the task table, precise
BN before every evaluation (``TEST.PRECISE_BN``), weights loaded without running their code, and
a clean stop on SIGTERM / SIGINT with a checkpoint that ``--resume`` continues from."""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

import unimoco.transfer.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from unimoco import __version__
from unimoco.pretrain.engine.preemption import Preempted, StopSignal
from unimoco.transfer.checkpoint import SafeDetectionCheckpointer
from unimoco.transfer.files import write_atomic
from unimoco.transfer.progress import ProgressHook
from unimoco.transfer.tasks import build_evaluator, headline, task_of

FINAL_METRICS = "final_metrics.json"


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
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """detectron2's loader, with the training mapper of the task when it has its own."""
        build_mapper = task_of(cfg.DATASETS.TRAIN[0]).build_train_mapper
        mapper = build_mapper(cfg) if build_mapper else None
        return build_detection_train_loader(cfg, mapper=mapper)

    @property
    def last_results(self) -> Mapping[str, Any]:
        """The results of the last evaluation ({} before any)."""
        return getattr(self, "_last_eval_results", None) or {}


def write_final_metrics(cfg: CfgNode, results: Mapping[str, Any]) -> Path:
    """``OUTPUT_DIR/final_metrics.json``: ``{"results": {dataset: {group: {metric: value}}}}``,
    the headline metric of each data set's task (``{"headline": {dataset: {"task", "group",
    "metric", "value"}}}``), the weights, iterations and unimoco version; NaN (no ground truth
    for a class) is written as null."""
    if len(cfg.DATASETS.TEST) == 1 and cfg.DATASETS.TEST[0] not in results:
        results = {cfg.DATASETS.TEST[0]: results}  # detectron2 unwraps a single data set
    results = _plain(results)
    payload = {
        "unimoco_version": __version__,
        "weights": cfg.MODEL.WEIGHTS,
        "max_iter": cfg.SOLVER.MAX_ITER,
        "results": results,
        "headline": {name: headline(name, values) for name, values in results.items()},
    }
    path = Path(cfg.OUTPUT_DIR) / FINAL_METRICS
    write_atomic(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    value = float(value)
    return None if math.isnan(value) else value
