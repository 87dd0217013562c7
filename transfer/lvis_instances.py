"""LVIS v0.5 instance segmentation: ``lvis_v0.5_train`` / ``lvis_v0.5_val`` registered under
``DATASETS.ROOT`` in detectron2's layout (``lvis/lvis_v0.5_{train,val}.json``, the images under
``coco/``), and the task row that scores them with detectron2's ``LVISEvaluator``.

The ``lvis`` package (``pip install unimoco[lvis]``) reads the json and scores the results; an
LVIS data set without it is a one-line error before anything is built.
"""

from __future__ import annotations

import importlib
import math
import os
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
from detectron2.config import CfgNode
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import get_lvis_instances_meta, register_lvis_instances
from detectron2.evaluation import DatasetEvaluator, LVISEvaluator

from unimoco.transfer.datasets import ROOT_LAYOUTS, RootLayout, _unregister
from unimoco.transfer.errors import DatasetError
from unimoco.transfer.tasks import Task, register_task

# name -> json file below the root; every split's images are under coco/ (each image's coco_url
# names its COCO folder, train2017 or val2017), as in detectron2's builtin LVIS names.
LVIS_SPLITS = {
    "lvis_v0.5_train": "lvis/lvis_v0.5_train.json",
    "lvis_v0.5_val": "lvis/lvis_v0.5_val.json",
}
# detectron2 joins this folder and each image's COCO folder as strings: the slash matters.
LVIS_IMAGE_FOLDER = "coco/"


class _NumpyWithFloat(types.ModuleType):
    """numpy with the ``np.float`` alias that NumPy 1.24 removed and lvis 0.5.3 (its last release)
    still uses in ``LVISEval.accumulate``; given to ``lvis.eval`` only."""

    float = float

    def __getattr__(self, name: str):
        return getattr(np, name)


class LVISEvaluatorCOCOStyle(LVISEvaluator):
    """``LVISEvaluator`` that runs on current NumPy and reports as our COCO evaluator does: 0 AP
    for a model with no detections at all (detectron2 says NaN, which hides a broken model behind
    a missing number), NaN for an area range without ground truth (LVIS says -100)."""

    def _eval_predictions(self, predictions: list[dict]) -> None:
        lvis_eval = importlib.import_module("lvis.eval")
        if not hasattr(lvis_eval.np, "float"):
            lvis_eval.np = _NumpyWithFloat("numpy")
        super()._eval_predictions(predictions)
        detected = any(prediction.get("instances") for prediction in predictions)
        self._results = OrderedDict(
            (task, {name: _reported(value, detected) for name, value in metrics.items()})
            for task, metrics in self._results.items()
        )


def _reported(value: float, detected: bool) -> float:
    if not detected:
        return 0.0
    return math.nan if value < 0 else value


def require_lvis(dataset_name: str) -> None:
    """Raise a ``DatasetError`` naming the ``lvis`` package and its pip command when it cannot
    be imported (detectron2 imports it only when it loads or scores the data)."""
    try:
        importlib.import_module("lvis")
    except ImportError:
        raise DatasetError(
            f"data set {dataset_name!r} needs the 'lvis' package (LVIS json and evaluation): "
            "pip install unimoco[lvis]"
        ) from None


def register_lvis_root(root: str | Path) -> None:
    """Register ``lvis_v0.5_train`` / ``lvis_v0.5_val`` under ``root`` (``root/lvis/...``,
    images under ``root/coco/``) with detectron2's 1230 LVIS v0.5 classes."""
    for name, json_file in LVIS_SPLITS.items():
        _unregister(name)
        register_lvis_instances(
            name,
            get_lvis_instances_meta(name),
            str(Path(root) / json_file),
            os.path.join(root, LVIS_IMAGE_FOLDER),
        )


def _missing_lvis(meta: Metadata) -> list[Path]:
    """The json and the image folder that do not exist; the ``lvis`` package comes first."""
    require_lvis(meta.name)
    missing = [Path(meta.json_file)] if not os.path.isfile(meta.json_file) else []
    return missing + ([Path(meta.image_root)] if not os.path.isdir(meta.image_root) else [])


def _lvis(cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    return LVISEvaluatorCOCOStyle(
        dataset_name,
        tasks=("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",),
        output_dir=output_dir,
        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
    )


# Mask AP is LVIS's metric (an instance segmentation benchmark; MoCo reports AP^mk); a box-only
# model reports bbox AP alongside an empty headline.
register_task(
    "lvis",
    Task("instance segmentation", _lvis, ("segm", "AP"), missing_files=_missing_lvis),
)
ROOT_LAYOUTS.append(RootLayout(register_lvis_root, tuple(LVIS_SPLITS), "lvis/, coco/"))
