"""The semantic segmentation task row: detectron2's ``SemSegEvaluator`` (mIoU over all classes,
ignore value left out), the training mapper of MoCo's protocol (random rescale, fixed-size crop
padded with the ignore value, flip) and the check of the data set's files and masks."""

from __future__ import annotations

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.evaluation import DatasetEvaluator, SemSegEvaluator
from detectron2.utils.file_io import PathManager
from PIL import Image

import unimoco.transfer.fcn_head  # noqa: F401  (registers FCNHead)
import unimoco.transfer.voc_seg  # noqa: F401  (the VOC 2012 root layout)
from unimoco.transfer.config import DetectionConfigError
from unimoco.transfer.sem_seg_data import missing_sem_seg_files
from unimoco.transfer.tasks import Task, register_task

# The image's padding beyond a crop (the label's is the ignore value).
IMAGE_PAD_VALUE = 128.0


class RandomScale(T.Augmentation):
    """Resize an image by a factor drawn uniformly from ``[low, high]``. Written here because
    detectron2's ``ResizeScale`` fits the image into a fraction of a fixed box and
    ``ResizeShortestEdge`` picks absolute edge lengths; the protocol scales each image by a factor
    of its own size."""

    def __init__(self, low: float, high: float, interp: int = Image.BILINEAR) -> None:
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        height, width = image.shape[:2]
        scale = np.random.uniform(self.low, self.high)
        new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
        return T.ResizeTransform(height, width, new_height, new_width, self.interp)


def sem_seg_train_augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """Rescale by ``INPUT.SCALE_RANGE``, a random ``INPUT.CROP.SIZE`` (height, width) crop padded
    at the right / bottom (label with the ignore value), then ``INPUT.RANDOM_FLIP``."""
    crop = cfg.INPUT.CROP
    if not crop.ENABLED or crop.TYPE != "absolute" or len(crop.SIZE) != 2:
        raise DetectionConfigError(
            f"INPUT.CROP = ENABLED {crop.ENABLED}, TYPE {crop.TYPE!r}, SIZE {list(crop.SIZE)}: "
            "semantic segmentation training expects ENABLED True, TYPE 'absolute' and SIZE "
            "[height, width] in pixels"
        )
    augmentations = [
        RandomScale(*cfg.INPUT.SCALE_RANGE),
        T.FixedSizeCrop(
            tuple(int(side) for side in crop.SIZE),
            pad=True,
            pad_value=IMAGE_PAD_VALUE,
            seg_pad_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        ),
    ]
    if cfg.INPUT.RANDOM_FLIP != "none":
        flip = cfg.INPUT.RANDOM_FLIP
        augmentations.append(
            T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical")
        )
    return augmentations


def build_sem_seg_train_mapper(cfg: CfgNode) -> DatasetMapper:
    """detectron2's ``DatasetMapper`` with :func:`sem_seg_train_augmentations`."""
    return DatasetMapper(cfg, is_train=True, augmentations=sem_seg_train_augmentations(cfg))


def read_labels(filename: str, dtype: type = int) -> np.ndarray:
    """A mask's class ids, for ``SemSegEvaluator``. Its default reader asks numpy for no copy of
    the PIL image, which numpy 2 refuses."""
    with PathManager.open(filename, "rb") as f, Image.open(f) as mask:
        return np.array(mask, dtype=dtype)


def _sem_seg_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    return SemSegEvaluator(
        dataset_name, distributed=True, output_dir=output_dir, sem_seg_loading_fn=read_labels
    )


SEM_SEG_TASK = Task(
    "semantic segmentation",
    _sem_seg_evaluator,
    ("sem_seg", "mIoU"),
    num_classes_key="MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    classes_field="stuff_classes",
    build_train_mapper=build_sem_seg_train_mapper,
    missing_files=missing_sem_seg_files,
)
register_task("sem_seg", SEM_SEG_TASK)
