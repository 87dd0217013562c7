"""detectron2 config for the detect command: its defaults plus our keys, YAML with ``_BASE_``,
and ``KEY VALUE`` overrides; unknown keys are errors naming the key and the file."""

from __future__ import annotations

from collections.abc import Sequence

from detectron2.config import CfgNode, get_cfg

from ..configs import BuiltinBaseMixin, UnknownConfigError, resolve_config_file
from ..pretrain.config_checks import (
    NON_NEGATIVE,
    POSITIVE,
    ConfigError,
    FloatLikeMixin,
    Valid,
    above,
    ascending,
    at_least,
    check_rules,
    one_of,
    within,
)

# Roots of the MODEL subtrees whose NORM key selects BN / SyncBN.
_NORM_NODES = ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD", "SEM_SEG_HEAD")
# detectron2's synchronised BNs: torch's SyncBatchNorm (CUDA + NCCL only) and NaiveSyncBatchNorm
# (statistics averaged by an all-reduce; what MoCo's C4 configs use).
_SYNC_NORMS = ("SyncBN", "naiveSyncBN")


class DetectionConfigError(ValueError):
    """A detection config file or override that does not fit the defaults."""


class _DetectionCfgNode(FloatLikeMixin, BuiltinBaseMixin, CfgNode):
    """detectron2's ``CfgNode`` whose ``_BASE_`` may name a built-in config, and where a whole
    number is taken for a float default."""


# The valid values of our keys and of the detectron2 keys whose bad values fail mid-run.
RULES: dict[str, Valid] = {
    "DATASETS.SHAPES.NUM_TRAIN": POSITIVE,
    "DATASETS.SHAPES.NUM_TEST": POSITIVE,
    # The shapes scenes are drawn at 24 px or more.
    "DATASETS.SHAPES.IMAGE_SIZE": at_least(24, "a size in px"),
    "DATASETS.SHAPES.SEED": NON_NEGATIVE,
    "DATALOADER.NUM_WORKERS": NON_NEGATIVE,
    "SOLVER.IMS_PER_BATCH": POSITIVE,
    "SOLVER.BASE_LR": NON_NEGATIVE,
    "SOLVER.MOMENTUM": within(0, 1, high_open=True),
    "SOLVER.WEIGHT_DECAY": NON_NEGATIVE,
    "SOLVER.MAX_ITER": POSITIVE,
    "SOLVER.STEPS": ascending("iterations"),
    "SOLVER.GAMMA": above(0),
    "SOLVER.WARMUP_ITERS": NON_NEGATIVE,
    "SOLVER.CHECKPOINT_PERIOD": POSITIVE,
    "TEST.EVAL_PERIOD": NON_NEGATIVE,
    "SVM.COSTS": Valid(lambda v: len(v) > 0 and all(c > 0 for c in v), "costs > 0, at least one"),
    "SVM.CV_FOLDS": at_least(2, "a number of folds"),
    "SVM.FEATURE": one_of("res2", "res3", "res4", "res5"),
    "SVM.RESIZE": POSITIVE,
    "SVM.IMAGE_SIZE": POSITIVE,
    "SVM.BATCH_SIZE": POSITIVE,
    "SVM.NUM_CLASSES": POSITIVE,
    "SVM.NUM_JOBS": Valid(lambda v: v >= 1 or v == -1, "a number of processes >= 1, or -1 (all)"),
    "MODEL.SEM_SEG_HEAD.NUM_CONVS": NON_NEGATIVE,
    "MODEL.SEM_SEG_HEAD.DILATION": POSITIVE,
    "INPUT.SCALE_RANGE": Valid(
        lambda v: len(v) == 2 and 0 < v[0] <= v[1], "a pair (lo, hi) with 0 < lo <= hi"
    ),
}


def add_unimoco_config(cfg: CfgNode) -> None:
    """Add our keys: where the real data lives, extra COCO jsons, the shapes scenes."""
    # Folder holding VOC2007/, VOC2012/ and coco/ ("" = detectron2's $DETECTRON2_DATASETS).
    cfg.DATASETS.ROOT = ""
    # More COCO-format data sets, each "NAME,JSON_FILE,IMAGE_ROOT".
    cfg.DATASETS.EXTRA_COCO = []
    # The generated shapes scenes (shapes_voc_train/test, shapes_coco_train/val).
    cfg.DATASETS.SHAPES = CfgNode()
    cfg.DATASETS.SHAPES.NUM_TRAIN = 1000
    cfg.DATASETS.SHAPES.NUM_TEST = 200
    cfg.DATASETS.SHAPES.IMAGE_SIZE = 128
    cfg.DATASETS.SHAPES.SEED = 0
    # Cache folder ("" = $UNIMOCO_CACHE/shapes or ~/.cache/unimoco/shapes).
    cfg.DATASETS.SHAPES.ROOT = ""
    # Image classification by linear SVMs on frozen features (VOC07, transfer/voc07_svm.py):
    # when ENABLED, detect extracts features and trains the SVMs instead of a detector.
    cfg.SVM = CfgNode()
    cfg.SVM.ENABLED = False
    # The cost of each class's SVM is picked from COSTS by CV_FOLDS-fold cross-validated AP.
    cfg.SVM.COSTS = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0]
    cfg.SVM.CV_FOLDS = 3
    # The backbone stage whose output, averaged over space and L2-normalised, is the feature.
    cfg.SVM.FEATURE = "res5"
    # Shorter side resized to RESIZE, then the centre IMAGE_SIZE x IMAGE_SIZE crop.
    cfg.SVM.RESIZE = 256
    cfg.SVM.IMAGE_SIZE = 224
    # Images per forward pass of the feature extraction.
    cfg.SVM.BATCH_SIZE = 64
    # The class count the data sets must have (one SVM per class).
    cfg.SVM.NUM_CLASSES = 20
    # Classes whose SVMs are trained at once (processes; -1 = one per CPU core).
    cfg.SVM.NUM_JOBS = 1
    # FCNHead (semantic segmentation): 3x3 convs of CONVS_DIM channels before the 1x1
    # classifier, and their dilation.
    cfg.MODEL.SEM_SEG_HEAD.NUM_CONVS = 2
    cfg.MODEL.SEM_SEG_HEAD.DILATION = 6
    # Semantic segmentation training: the image is resized by a factor drawn from this range,
    # then cropped / padded to INPUT.CROP.SIZE.
    cfg.INPUT.SCALE_RANGE = (0.5, 2.0)


def load_detection_cfg(config_file: str, overrides: Sequence[str] = ()) -> CfgNode:
    """detectron2's defaults with ours, merged with ``config_file`` and ``KEY VALUE`` pairs."""
    cfg = get_cfg()
    add_unimoco_config(cfg)
    cfg = _DetectionCfgNode(cfg)
    try:
        path = resolve_config_file(config_file)
    except UnknownConfigError as err:
        raise DetectionConfigError(str(err)) from None
    try:
        cfg.merge_from_file(str(path))
    except (KeyError, ValueError) as err:  # unknown key / value of the wrong type
        raise DetectionConfigError(f"{config_file}: {err.args[0]}") from None
    if len(overrides) % 2:
        raise DetectionConfigError(
            f"overrides must be KEY VALUE pairs; got an odd number: {' '.join(overrides)}"
        )
    try:
        cfg.merge_from_list(list(overrides))
    except (KeyError, ValueError, AssertionError) as err:  # yacs asserts on unknown keys
        raise DetectionConfigError(f"command-line override: {err.args[0]}") from None
    try:
        check_rules(cfg, RULES)
    except ConfigError as err:
        raise DetectionConfigError(str(err)) from None
    return cfg


def sync_bn_fallback(cfg: CfgNode, world_size: int) -> dict[str, str]:
    """Replace SyncBN / naiveSyncBN where there is nothing to sync or SyncBN cannot: plain BN in
    one process (for both), naiveSyncBN (which works on gloo) instead of SyncBN across CPU
    processes. Returns the keys changed and their new values."""
    if world_size > 1 and cfg.MODEL.DEVICE != "cpu":
        return {}
    replacement = "BN" if world_size == 1 else "naiveSyncBN"
    changed = {}
    for node in _NORM_NODES:
        norm = cfg.MODEL[node].NORM
        if norm in _SYNC_NORMS and norm != replacement:
            cfg.MODEL[node].NORM = replacement
            changed[f"MODEL.{node}.NORM"] = replacement
    return changed
