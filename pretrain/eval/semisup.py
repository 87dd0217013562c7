"""Semi-supervised fine-tuning: the whole network on a labeled fraction (1 % / 10 %).

The subset is class-balanced and seeded (or the user's list, in the pretraining format) and is
written to ``OUTPUT_DIR/semisup_labeled_subset.txt``. SGD momentum 0.9 with a small lr for the
pretrained backbone and a larger one for the new head, cosine or step schedule over
SEMISUP.EPOCHS, RandomResizedCrop + flip; BN trains. Reports top-1/top-5 on the held-out split.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

from .. import distributed as du
from ..backbone import BackboneState
from ..data.label_subset import read_labeled_list, select_labeled, write_labeled_list
from ..log_names import LOGGER_NAME
from .commands import run_command
from .data import build_classifier_loader, build_eval_splits, classifier_train_transform
from .features import HEAD_PREFIX, EvalError, build_classifier, compute_outputs
from .metrics import topk_accuracy
from .resume import EpochCheckpoint

logger = logging.getLogger(LOGGER_NAME)

SUBSET_FILE = "semisup_labeled_subset.txt"


def finetune_subset(dataset: Dataset, cfg: CfgNode) -> np.ndarray:
    """Indices of the labeled images to fine-tune on: SEMISUP.LABELED_LIST when given, else a
    class-balanced SEMISUP.LABEL_RATIO of every class, seeded by SEED."""
    targets = np.asarray(dataset.targets)
    if cfg.SEMISUP.LABELED_LIST:
        mask = read_labeled_list(cfg.SEMISUP.LABELED_LIST, dataset.sample_ids)
        unlabeled = np.flatnonzero(mask & (targets < 0))
        if len(unlabeled):
            raise EvalError(
                f"SEMISUP.LABELED_LIST {cfg.SEMISUP.LABELED_LIST}: {len(unlabeled)} entries name "
                f"images without a label, e.g. {dataset.sample_ids[unlabeled[0]]}"
            )
    else:
        mask = select_labeled(targets, cfg.SEMISUP.LABEL_RATIO, cfg.SEED)
    if not mask.any():
        raise EvalError("semi-supervised fine-tuning: the labeled subset is empty")
    return np.flatnonzero(mask)


def lr_factor(epoch: int, cfg: CfgNode) -> float:
    """The schedule's multiplier of both lrs at ``epoch``: half-cosine from 1 to 0 over
    SEMISUP.EPOCHS, or GAMMA for every SEMISUP.STEPS epoch reached."""
    semisup = cfg.SEMISUP
    if semisup.SCHEDULE == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / semisup.EPOCHS))
    return semisup.GAMMA ** sum(epoch >= step for step in semisup.STEPS)


def build_optimizer(model: nn.Module, cfg: CfgNode) -> torch.optim.SGD:
    """SGD with two parameter groups: backbone at SEMISUP.BACKBONE_LR and fc at SEMISUP.HEAD_LR
    (both per 256 images); ``base_lr`` keeps each group's base for the schedule."""
    semisup = cfg.SEMISUP
    scale = semisup.BATCH_SIZE / 256
    head = [p for n, p in model.named_parameters() if n.startswith(HEAD_PREFIX)]
    backbone = [p for n, p in model.named_parameters() if not n.startswith(HEAD_PREFIX)]
    groups = [
        {"params": backbone, "base_lr": semisup.BACKBONE_LR * scale},
        {"params": head, "base_lr": semisup.HEAD_LR * scale},
    ]
    return torch.optim.SGD(
        groups,
        lr=semisup.HEAD_LR * scale,
        momentum=semisup.MOMENTUM,
        weight_decay=semisup.WEIGHT_DECAY,
    )


def finetune(
    model: nn.Module,
    train: Dataset,
    cfg: CfgNode,
    device: torch.device,
    epochs: EpochCheckpoint | None = None,
) -> None:
    """Train every parameter of ``model`` (BN in train mode) on ``train`` for SEMISUP.EPOCHS;
    ``epochs`` saves the state after every epoch, resumes, and stops on a signal."""
    epochs = epochs or EpochCheckpoint()
    optimizer = build_optimizer(model, cfg)
    net = model
    if du.get_world_size() > 1:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    model.train()
    trained = {"model": model, "optimizer": optimizer}
    for epoch in range(epochs.start(trained), cfg.SEMISUP.EPOCHS):
        factor = lr_factor(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        # Full batches only: a last batch of one image would break BN's training statistics.
        loader = build_classifier_loader(
            train, cfg.SEMISUP.BATCH_SIZE, cfg.DATA.NUM_WORKERS, cfg.SEED, epoch, drop_last=True
        )
        total, count = 0.0, 0
        for images, targets, _ in loader:
            epochs.check_stop(epoch)
            if len(targets) < 2:
                continue
            loss = F.cross_entropy(net(images.to(device, non_blocking=True)), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(targets), count + len(targets)
        last = cfg.SEMISUP.EPOCHS
        if (epoch + 1) % max(1, last // 10) == 0 or epoch + 1 == last:
            logger.info(
                "semisup: epoch %d/%d  loss %.4f  lr x%.3g",
                epoch + 1,
                last,
                total / max(count, 1),
                factor,
            )
        epochs.end_epoch(epoch, trained)


def run_semisup(
    state: BackboneState,
    cfg: CfgNode,
    device: torch.device,
    epochs: EpochCheckpoint | None = None,
) -> dict:
    """Fine-tune a loaded backbone with a new head on the labeled subset; top-1/top-5 (%).
    ``epochs``: epoch checkpoints, ``--resume`` and preemption."""
    augment = classifier_train_transform(cfg.INPUT.SIZE, cfg.SEMISUP.CROP_SCALE)
    train, val, num_classes = build_eval_splits(cfg, augment)
    subset = finetune_subset(train, cfg)
    if du.is_main_process():
        mask = np.zeros(len(train), dtype=bool)
        mask[subset] = True
        write_labeled_list(Path(cfg.OUTPUT_DIR) / SUBSET_FILE, train.sample_ids, mask)
    logger.info(
        "semisup: %d of %d training images labeled (%s), %d classes, %d epochs",
        len(subset),
        len(train),
        cfg.SEMISUP.LABELED_LIST or f"ratio {cfg.SEMISUP.LABEL_RATIO}, seed {cfg.SEED}",
        num_classes,
        cfg.SEMISUP.EPOCHS,
    )
    model = build_classifier(state, num_classes).to(device)
    finetune(model, Subset(train, subset.tolist()), cfg, device, epochs)
    model.eval()
    scores, labels = compute_outputs(model, num_classes, val, cfg, device)
    return {
        **topk_accuracy(scores, labels),
        "num_labeled": len(subset),
        "epochs": cfg.SEMISUP.EPOCHS,
        "num_val": len(labels),
    }


def main(argv: list[str] | None = None) -> int:
    """``unimoco semisup --checkpoint C [--config-file F] [KEY VALUE ...]``."""
    return run_command(
        "semisup",
        "Semi-supervised fine-tuning on a labeled fraction",
        argv,
        run_semisup,
        resumable=True,
    )
