"""The VOC07 linear-SVM protocol (Goyal et al. 2019, as in PIRL, CO2 and VISSL): one linear SVM
per class on frozen, L2-normalised features of trainval, its cost chosen per class by k-fold
cross-validated AP, retrained on all of trainval, scored by AP on test, mAP over the classes.

Training labels: present (1) is positive; absent (-1) and difficult-only (0) are negative, as in
the reference SVM scripts. Test: difficult-only images are left out of that class's AP (the VOC
devkit convention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from joblib import Parallel, delayed
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC

from unimoco.transfer.config import DetectionConfigError
from unimoco.transfer.errors import DatasetError
from unimoco.transfer.frozen_features import build_frozen_backbone, extract_features
from unimoco.transfer.tasks import task_of
from unimoco.transfer.voc07_cls import DIFFICULT, EVALUATOR_TYPE, POSITIVE, class_list_file

logger = logging.getLogger("unimoco.detect")

# Goyal et al.'s LinearSVC: positives weighted twice, squared hinge, L2, dual, at most 2000
# passes; liblinear's visiting order seeded (theirs is not) so that a run repeats exactly.
SVM_SETTINGS = {
    "class_weight": {1: 2, -1: 1},
    "loss": "squared_hinge",
    "penalty": "l2",
    "dual": True,
    "tol": 1e-4,
    "max_iter": 2000,
    "random_state": 0,
}


@dataclass(frozen=True)
class ClassResult:
    """One class: the chosen cost, the cross-validated AP of every cost, the test AP (0-1)."""

    cost: float
    cv_ap: tuple[float, ...]
    test_ap: float


def voc_ap(present: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (0-1) of ``scores`` for the boolean ``present``: the area under the
    precision envelope (each precision raised to the best at any higher recall), the VOC devkit's
    all-point AP that the reference SVM scripts report; scikit-learn's
    ``average_precision_score`` has no envelope, so only its curve is used here."""
    precision, recall, _ = precision_recall_curve(present, scores)
    precision, recall = precision[::-1], recall[::-1]  # recall ascending from 0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


def train_labels(labels: np.ndarray) -> np.ndarray:
    """SVM targets from list labels: 1 present, -1 absent or difficult-only."""
    return np.where(labels == POSITIVE, 1, -1)


def fit_class(
    train_x: np.ndarray,
    labels: np.ndarray,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    costs: Sequence[float],
    folds: int,
) -> ClassResult:
    """One class's SVM: the cost of the best ``folds``-fold cross-validated AP on trainval (the
    first such in ``costs``), retrained on all of trainval, its AP on the test images that are
    not difficult-only."""
    y = train_labels(labels)
    cv_ap = tuple(
        float(
            cross_val_score(
                LinearSVC(C=cost, **SVM_SETTINGS), train_x, y, cv=folds, scoring="average_precision"
            ).mean()
        )
        for cost in costs
    )
    cost = costs[int(np.argmax(cv_ap))]
    svm = LinearSVC(C=cost, **SVM_SETTINGS).fit(train_x, y)
    scored = test_labels != DIFFICULT
    test_ap = voc_ap(test_labels[scored] == POSITIVE, svm.decision_function(test_x[scored]))
    return ClassResult(cost, cv_ap, test_ap)


def svm_results(
    class_names: Sequence[str],
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    costs: Sequence[float],
    folds: int,
    jobs: int = 1,
) -> dict[str, float]:
    """``{"mAP", "AP-<class>", "C-<class>"}`` (APs in percent) of one SVM per column of the
    label matrices ``train_y`` / ``test_y`` (1 / -1 / 0 per image and class), ``jobs`` classes
    at a time."""
    per_class = Parallel(n_jobs=jobs)(
        delayed(fit_class)(train_x, train_y[:, i], test_x, test_y[:, i], costs, folds)
        for i in range(len(class_names))
    )
    results = {"mAP": 100 * float(np.mean([r.test_ap for r in per_class]))}
    for name, result in zip(class_names, per_class):
        logger.info(
            f"{name}: C {result.cost:g}, test AP {100 * result.test_ap:.2f}, cross-validated AP "
            + ", ".join(f"{c:g}: {100 * ap:.2f}" for c, ap in zip(costs, result.cv_ap))
        )
        results[f"AP-{name}"] = 100 * result.test_ap
    results.update({f"C-{name}": r.cost for name, r in zip(class_names, per_class)})
    return results


def check_svm_run(cfg: CfgNode, args: Any) -> None:
    """The command line and config of an SVM run (``SVM.ENABLED``): one process, no
    --eval-only / --resume (nothing is trained to resume or re-evaluate), a crop that fits in
    the resized image."""
    if args.eval_only or args.resume:
        flag = "--eval-only" if args.eval_only else "--resume"
        raise DetectionConfigError(
            f"{flag} does not apply with SVM.ENABLED True: the SVM protocol trains and scores "
            "its SVMs in one go; run it again without the flag"
        )
    if args.num_gpus * args.num_machines > 1:
        raise DetectionConfigError(
            "SVM.ENABLED True runs in one process (the features on MODEL.DEVICE, the SVMs on "
            f"SVM.NUM_JOBS CPU cores); got --num-gpus {args.num_gpus} --num-machines "
            f"{args.num_machines}"
        )
    if cfg.SVM.IMAGE_SIZE > cfg.SVM.RESIZE:
        raise DetectionConfigError(
            f"SVM.IMAGE_SIZE = {cfg.SVM.IMAGE_SIZE} is larger than SVM.RESIZE = "
            f"{cfg.SVM.RESIZE}; expected a centre crop no larger than the resized shorter side"
        )
    if len(cfg.DATASETS.TRAIN) != 1 or len(cfg.DATASETS.TEST) != 1:
        raise DetectionConfigError(
            f"SVM.ENABLED True takes one DATASETS.TRAIN and one DATASETS.TEST data set; got "
            f"{list(cfg.DATASETS.TRAIN)} and {list(cfg.DATASETS.TEST)}"
        )


def check_svm_datasets(cfg: CfgNode) -> None:
    """SVM runs take classification data sets (``voc07_cls``), and those data sets SVM runs;
    both with the same classes."""
    for name in [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]:
        is_cls = MetadataCatalog.get(name).get("evaluator_type") == EVALUATOR_TYPE
        if is_cls and not cfg.SVM.ENABLED:
            task_of(name).build_evaluator(cfg, name, "")  # raises: scored by SVMs
        if cfg.SVM.ENABLED and not is_cls:
            raise DatasetError(
                f"SVM.ENABLED True needs image classification data sets (evaluator_type "
                f"{EVALUATOR_TYPE!r}, e.g. voc_2007_cls_trainval / voc_2007_cls_test); "
                f"{name!r} is a {task_of(name).label} data set"
            )
    if cfg.SVM.ENABLED:
        train, test = cfg.DATASETS.TRAIN[0], cfg.DATASETS.TEST[0]
        if MetadataCatalog.get(train).thing_classes != MetadataCatalog.get(test).thing_classes:
            raise DatasetError(f"data sets {train!r} and {test!r} have different classes")


def label_matrix(dataset: list[dict]) -> np.ndarray:
    """``(images, classes)`` int8: the 1 / -1 / 0 labels of every image."""
    return np.stack([d["labels"] for d in dataset])


def check_trainable(name: str, labels: np.ndarray, folds: int) -> None:
    """Each class needs ``folds`` positive and ``folds`` negative trainval images, so that every
    cross-validation fold trains on both."""
    meta = MetadataCatalog.get(name)
    y = train_labels(labels)
    for i, class_name in enumerate(meta.thing_classes):
        positives = int(np.sum(y[:, i] == 1))
        if min(positives, len(y) - positives) < folds:
            raise DatasetError(
                f"{class_list_file(meta, class_name)}: {positives} positive and "
                f"{len(y) - positives} other images; SVM.CV_FOLDS = {folds} needs at least "
                f"{folds} of each"
            )


def run_svm(cfg: CfgNode) -> dict[str, dict[str, dict[str, float]]]:
    """Features of ``DATASETS.TRAIN[0]`` and ``DATASETS.TEST[0]``, one SVM per class;
    ``{test set: {"classification": {"mAP", "AP-<class>", "C-<class>"}}}``."""
    train_name, test_name = cfg.DATASETS.TRAIN[0], cfg.DATASETS.TEST[0]
    train_set, test_set = DatasetCatalog.get(train_name), DatasetCatalog.get(test_name)
    train_y, test_y = label_matrix(train_set), label_matrix(test_set)
    check_trainable(train_name, train_y, cfg.SVM.CV_FOLDS)
    backbone = build_frozen_backbone(cfg)
    logger.info(
        f"Extracting {cfg.SVM.FEATURE} features of {len(train_set)} {train_name} and "
        f"{len(test_set)} {test_name} images"
    )
    train_x = extract_features(cfg, backbone, train_set)
    test_x = extract_features(cfg, backbone, test_set)
    logger.info(
        f"Training {train_y.shape[1]} SVMs on {train_x.shape[1]}-d features, costs "
        f"{list(cfg.SVM.COSTS)}, {cfg.SVM.CV_FOLDS}-fold cross-validation"
    )
    classes = MetadataCatalog.get(test_name).thing_classes
    results = svm_results(
        classes, train_x, train_y, test_x, test_y, cfg.SVM.COSTS, cfg.SVM.CV_FOLDS, cfg.SVM.NUM_JOBS
    )
    logger.info(f"{test_name}: mAP {results['mAP']:.2f}")
    return {test_name: {"classification": results}}
