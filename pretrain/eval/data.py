"""The datasets and loaders the evaluations read: a training split and a held-out split whose
classes must agree, with the protocols' train augmentation or the 256/224 eval transform."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import transforms as T

from .. import distributed as du
from ..data.datasets import build_dataset, collate_skip_bad
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform
from ..engine.data import SeededAugmentation
from .features import EvalError


def classifier_train_transform(size: int, scale: Sequence[float]) -> T.Compose:
    """RandomResizedCrop + horizontal flip: the linear and fine-tuning protocols' augmentation."""
    scale = tuple(float(s) for s in scale)
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise EvalError(f"crop scale = {scale}; expected (min, max) with 0 < min <= max <= 1")
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=scale),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def build_eval_splits(
    cfg: CfgNode, train_transform: T.Compose | None = None
) -> tuple[Dataset, Dataset, int]:
    """``(train, val, num_classes)``: the training split (with ``train_transform``, else the eval
    transform) and the held-out split (eval transform), checked to share their classes."""
    eval_transform = build_eval_transform(cfg.INPUT.SIZE)
    train = build_dataset(cfg, "train", train_transform or eval_transform)
    val = build_dataset(cfg, "val", eval_transform)
    check_same_classes(train, val, cfg.DATA.NAME)
    return train, val, len(train.classes)


def check_same_classes(train: Dataset, val: Dataset, name: str) -> None:
    """Both splits must name the same classes, and every label must index one of them."""
    if list(train.classes) != list(val.classes):
        raise EvalError(
            f"DATA.NAME {name}: the training split has {len(train.classes)} classes "
            f"({', '.join(train.classes[:5])}, ...) and the held-out split {len(val.classes)} "
            f"({', '.join(val.classes[:5])}, ...); expected the same classes in the same order"
        )
    for split, dataset in (("training", train), ("held-out", val)):
        bad = [t for t in dataset.targets if t >= len(dataset.classes)]
        if bad:
            raise EvalError(
                f"DATA.NAME {name}: the {split} split has label {bad[0]} but only "
                f"{len(dataset.classes)} classes; expected labels in [0, {len(dataset.classes)})"
            )


def labeled_only(dataset: Dataset) -> Dataset:
    """The dataset without its unlabeled images (target -1, as STL-10's unlabeled split)."""
    keep = [i for i, target in enumerate(dataset.targets) if target >= 0]
    if not keep:
        raise EvalError("the training split has no labeled images; expected some to train on")
    return dataset if len(keep) == len(dataset) else Subset(dataset, keep)


def build_classifier_loader(
    dataset: Dataset, batch_size: int, num_workers: int, seed: int, epoch: int, drop_last: bool
) -> DataLoader:
    """One epoch of shuffled batches for this rank (``batch_size`` is global), with crops seeded
    per (seed, epoch, image) so that the worker count does not change them."""
    seeded = SeededAugmentation(dataset, seed)
    seeded.epoch = epoch
    sampler = DistributedSampler(
        seeded, du.get_world_size(), du.get_rank(), shuffle=True, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    local_batch = max(1, batch_size // du.get_world_size())
    return DataLoader(
        seeded,
        batch_size=min(local_batch, len(sampler)),
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_skip_bad,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
    )
