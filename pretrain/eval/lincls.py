"""Linear protocol (MoCo): a new fc trained on a frozen backbone kept in eval mode.

Standard mode (published numbers): RandomResizedCrop + flip every epoch, SGD momentum 0.9,
lr 30 (per 256 images), wd 0, 100 epochs with lr x0.1 at 60 and 80; test with the 256/224
resize and centre crop. Fast mode caches the features of un-augmented images once and trains
the same head on them, for small data and quick sweeps. Either way the backbone is checked to be
bit-identical to the checkpoint afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from .. import distributed as du
from ..backbone import BackboneState
from ..log_names import LOGGER_NAME
from ..model.resnet import feature_dim
from .commands import run_command
from .data import (
    build_classifier_loader,
    build_eval_splits,
    classifier_train_transform,
    labeled_only,
)
from .features import HEAD_PREFIX, build_classifier, compute_outputs, pooled_features
from .metrics import topk_accuracy
from .resume import EpochCheckpoint

logger = logging.getLogger(LOGGER_NAME)


class BackboneChangedError(RuntimeError):
    """The backbone moved during linear training: the protocol was broken."""


def lincls_lr(epoch: int, base_lr: float, steps: Sequence[int], gamma: float) -> float:
    """MoCo's step schedule: ``base_lr`` times ``gamma`` for every step epoch reached (epochs
    count from 0, so with steps (60, 80) epochs 60-79 run at 0.1x and 80 on at 0.01x)."""
    return base_lr * gamma ** sum(epoch >= step for step in steps)


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Stop gradients to everything but the fc; returns the fc's parameters (the ones to train)."""
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(HEAD_PREFIX)
    return list(model.fc.parameters())


def check_backbone_unchanged(model: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """Every backbone weight and BN statistic must still equal ``reference`` (the checkpoint's):
    catches the classic mistakes of training the backbone or updating BN statistics."""
    current = model.state_dict()
    changed = [
        key for key, value in reference.items() if not torch.equal(current[key].cpu(), value.cpu())
    ]
    if changed:
        raise BackboneChangedError(
            f"linear protocol: {len(changed)} backbone tensors changed during training "
            f"({', '.join(changed[:5])}); the backbone must stay frozen in eval mode"
        )


def _base_lr(cfg: CfgNode) -> float:
    return cfg.LINCLS.BASE_LR * cfg.LINCLS.BATCH_SIZE / 256


def _optimizer(params: list[nn.Parameter], cfg: CfgNode) -> torch.optim.SGD:
    lincls = cfg.LINCLS
    return torch.optim.SGD(
        params, lr=_base_lr(cfg), momentum=lincls.MOMENTUM, weight_decay=lincls.WEIGHT_DECAY
    )


def _set_epoch_lr(optimizer: torch.optim.Optimizer, epoch: int, cfg: CfgNode) -> float:
    lr = lincls_lr(epoch, _base_lr(cfg), cfg.LINCLS.STEPS, cfg.LINCLS.GAMMA)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _log_epoch(epoch: int, epochs: int, loss: float, lr: float) -> None:
    if (epoch + 1) % max(1, epochs // 10) == 0 or epoch + 1 == epochs:
        logger.info("lincls: epoch %d/%d  loss %.4f  lr %.4g", epoch + 1, epochs, loss, lr)


def train_linear_standard(
    model: nn.Module,
    train: Dataset,
    cfg: CfgNode,
    device: torch.device,
    epochs: EpochCheckpoint | None = None,
) -> None:
    """Train ``model.fc`` on augmented crops; the backbone runs in eval mode without gradients.
    ``epochs`` saves the head after every epoch, resumes, and stops on a signal."""
    epochs = epochs or EpochCheckpoint()
    params = freeze_backbone(model)
    head = model.fc
    if du.get_world_size() > 1:
        head = DistributedDataParallel(
            model.fc, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = _optimizer(params, cfg)
    model.eval()
    trained = {"fc": model.fc, "optimizer": optimizer}
    for epoch in range(epochs.start(trained), cfg.LINCLS.EPOCHS):
        lr = _set_epoch_lr(optimizer, epoch, cfg)
        loader = build_classifier_loader(
            train, cfg.LINCLS.BATCH_SIZE, cfg.DATA.NUM_WORKERS, cfg.SEED, epoch, drop_last=False
        )
        total, count = 0.0, 0
        for images, targets, _ in loader:
            epochs.check_stop(epoch)
            if not len(targets):
                continue
            with torch.no_grad():
                features = pooled_features(model, images.to(device, non_blocking=True))
            loss = F.cross_entropy(head(features), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(targets), count + len(targets)
        _log_epoch(epoch, cfg.LINCLS.EPOCHS, total / max(count, 1), lr)
        epochs.end_epoch(epoch, trained)


def train_linear_on_features(
    head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, cfg: CfgNode
) -> None:
    """Fast mode: train ``head`` on cached features with the standard optimizer and schedule
    (shuffled by SEED; every rank runs the same, cheap, computation)."""
    optimizer = _optimizer(list(head.parameters()), cfg)
    generator = torch.Generator().manual_seed(cfg.SEED)
    for epoch in range(cfg.LINCLS.EPOCHS):
        lr = _set_epoch_lr(optimizer, epoch, cfg)
        total = 0.0
        for index in torch.randperm(len(labels), generator=generator).split(cfg.LINCLS.BATCH_SIZE):
            index = index.to(features.device)
            loss = F.cross_entropy(head(features[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        _log_epoch(epoch, cfg.LINCLS.EPOCHS, total / len(labels), lr)


def run_lincls(
    state: BackboneState,
    cfg: CfgNode,
    device: torch.device,
    epochs: EpochCheckpoint | None = None,
) -> dict:
    """The linear protocol in LINCLS.MODE on a loaded backbone: top-1/top-5 (%) on the held-out
    split after training, once the backbone has been checked unchanged. ``epochs``: epoch
    checkpoints and preemption of the standard mode (fast mode trains in seconds)."""
    fast = cfg.LINCLS.MODE == "fast"
    augment = None if fast else classifier_train_transform(cfg.INPUT.SIZE, cfg.LINCLS.CROP_SCALE)
    train, val, num_classes = build_eval_splits(cfg, augment)
    train = labeled_only(train)
    model = build_classifier(state, num_classes).to(device)
    logger.info(
        "lincls (%s): %d training images, %d held out, %d classes, %d epochs",
        cfg.LINCLS.MODE,
        len(train),
        len(val),
        num_classes,
        cfg.LINCLS.EPOCHS,
    )
    if fast:
        freeze_backbone(model)
        model.eval()

        def features(images: torch.Tensor) -> torch.Tensor:
            return pooled_features(model, images)

        train_features, labels = compute_outputs(features, feature_dim(model), train, cfg, device)
        val_features, val_labels = compute_outputs(features, feature_dim(model), val, cfg, device)
        train_linear_on_features(model.fc, train_features, labels, cfg)
        with torch.no_grad():
            scores = model.fc(val_features)
    else:
        train_linear_standard(model, train, cfg, device, epochs)
        model.eval()
        scores, val_labels = compute_outputs(model, num_classes, val, cfg, device)
    check_backbone_unchanged(model, state.state_dict)
    return {
        **topk_accuracy(scores, val_labels),
        "mode": cfg.LINCLS.MODE,
        "epochs": cfg.LINCLS.EPOCHS,
        "num_train": len(train),
        "num_val": len(val_labels),
    }


def main(argv: list[str] | None = None) -> int:
    """``unimoco lincls --checkpoint C [--config-file F] [KEY VALUE ...]``."""
    return run_command(
        "lincls", "Linear protocol on a frozen backbone", argv, run_lincls, resumable=True
    )
