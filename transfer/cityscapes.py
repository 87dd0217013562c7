"""Cityscapes (gtFine) for the detect command: detectron2's instance and semantic segmentation
names registered under ``DATASETS.ROOT`` (``cityscapes/leftImg8bit/<split>``,
``cityscapes/gtFine/<split>``), their rows in the task table (detectron2's Cityscapes evaluators,
which run cityscapesscripts' official evaluation) and the checks that the optional packages and
the label images the loaders read are there."""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data.catalog import Metadata
from detectron2.data.datasets.builtin import _RAW_CITYSCAPES_SPLITS, register_all_cityscapes
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    DatasetEvaluator,
)

from unimoco.transfer.cityscapes_numpy import fit_numpy
from unimoco.transfer.datasets import ROOT_LAYOUTS, RootLayout, _unregister
from unimoco.transfer.errors import DatasetError
from unimoco.transfer.sem_seg import SEM_SEG_TASK
from unimoco.transfer.tasks import Task, register_task

# detectron2's names: cityscapes_fine_{instance_seg,sem_seg}_{train,val,test}.
CITYSCAPES_NAMES = tuple(
    key.format(task=task) for key in _RAW_CITYSCAPES_SPLITS for task in ("instance_seg", "sem_seg")
)
PIP_EXTRA = "pip install 'unimoco[cityscapes]'"
# The packages each task's loader and evaluator import: cityscapesscripts (labels, evaluation),
# and shapely for the instance loader, which reads the polygons of the json annotations.
INSTANCE_PACKAGES = ("cityscapesscripts", "shapely")
SEM_SEG_PACKAGES = ("cityscapesscripts",)


def register_cityscapes_root(root: str | Path) -> None:
    """Register detectron2's Cityscapes names under ``root`` (``root/cityscapes/...``)."""
    for name in CITYSCAPES_NAMES:
        _unregister(name)
    register_all_cityscapes(str(root))


def require_packages(dataset_name: str, packages: tuple[str, ...]) -> None:
    """Raise a ``DatasetError`` naming the first of ``packages`` that cannot be imported."""
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            raise DatasetError(
                f"data set {dataset_name!r} needs the Python package {package!r}, which is not "
                f"installed: {PIP_EXTRA}"
            ) from None


def _missing_folders(meta: Metadata) -> list[Path]:
    folders = [Path(meta.image_dir), Path(meta.gt_dir)]
    return [folder for folder in folders if not folder.is_dir()]


def _missing_instance(meta: Metadata) -> list[Path]:
    require_packages(meta.name, INSTANCE_PACKAGES)
    return _missing_folders(meta)


def _missing_sem_seg(meta: Metadata) -> list[Path]:
    """The folders, then every ``*_gtFine_labelTrainIds.png`` (the loader's targets, made from the
    polygons by cityscapesscripts; not part of the download)."""
    require_packages(meta.name, SEM_SEG_PACKAGES)
    missing = _missing_folders(meta)
    if missing:
        return missing
    gt_dir = Path(meta.gt_dir)
    for polygons in sorted(gt_dir.glob("*/*_gtFine_polygons.json")):
        train_ids = polygons.with_name(
            polygons.name.replace("_polygons.json", "_labelTrainIds.png")
        )
        if not train_ids.is_file():
            raise DatasetError(
                f"data set {meta.name!r}: {train_ids} does not exist; create the "
                f"*_gtFine_labelTrainIds.png files with `CITYSCAPES_DATASET={gt_dir.parents[1]} "
                "csCreateTrainIdLabelImgs` (from cityscapesscripts)"
            )
    return []


class CityscapesInstanceEvaluatorInFolder(CityscapesInstanceEvaluator):
    """detectron2's ``CityscapesInstanceEvaluator`` run from inside the output folder
    (cityscapesscripts' instance evaluation writes ``matches.json`` into the working directory),
    on numpy 2 (:mod:`unimoco.transfer.cityscapes_numpy`)."""

    def __init__(self, dataset_name: str, output_dir: str) -> None:
        super().__init__(dataset_name)
        self._output_dir = output_dir

    def evaluate(self) -> OrderedDict | None:
        fit_numpy("cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling")
        os.makedirs(self._output_dir, exist_ok=True)
        previous = os.getcwd()
        os.chdir(self._output_dir)
        try:
            return super().evaluate()
        finally:
            os.chdir(previous)


class CityscapesSemSegEvaluatorAnyNumpy(CityscapesSemSegEvaluator):
    """detectron2's ``CityscapesSemSegEvaluator``, on numpy 2 as on numpy 1
    (:mod:`unimoco.transfer.cityscapes_numpy`)."""

    def evaluate(self) -> OrderedDict | None:
        fit_numpy("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
        return super().evaluate()


def _instance_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    return CityscapesInstanceEvaluatorInFolder(dataset_name, output_dir)


def _sem_seg_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    return CityscapesSemSegEvaluatorAnyNumpy(dataset_name)


register_task(
    "cityscapes_instance",
    Task(
        "instance segmentation",
        _instance_evaluator,
        # cityscapesscripts' AP (mask IoU 0.5:0.95) over the 8 instance classes.
        ("segm", "AP"),
        missing_files=_missing_instance,
    ),
)
# The sem_seg row (its class-count check and MoCo's FCN training mapper) with cityscapesscripts'
# evaluation, whose class IoU averaged over the 19 train ids is the mIoU.
register_task(
    "cityscapes_sem_seg",
    replace(
        SEM_SEG_TASK,
        build_evaluator=_sem_seg_evaluator,
        headline=("sem_seg", "IoU"),
        missing_files=_missing_sem_seg,
    ),
)
ROOT_LAYOUTS.append(RootLayout(register_cityscapes_root, CITYSCAPES_NAMES, "cityscapes/"))
