"""Backbones for evaluation and their outputs over a dataset, sharded across ranks.

A backbone is a torchvision ResNet holding a checkpoint's weights (any format
``load_backbone_state`` reads, or a seeded random init as the baseline) with a new fc head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader, Dataset, Subset

from .. import distributed as du
from ..backbone import BackboneState, load_backbone_state
from ..data.datasets import collate_skip_bad
from ..log_names import LOGGER_NAME
from ..model.resnet import build_resnet, feature_dim

logger = logging.getLogger(LOGGER_NAME)

HEAD_PREFIX = "fc."
OPTIONAL_SUFFIX = "num_batches_tracked"  # absent from old torchvision checkpoints
HEAD_INIT_STD = 0.01  # MoCo's linear protocol: fc weights ~ N(0, 0.01), bias 0


class EvalError(ValueError):
    """An evaluation input that does not fit: checkpoint vs config, train vs val classes."""


def random_backbone_state(arch: str, cifar_stem: bool, seed: int) -> BackboneState:
    """A randomly initialised backbone (seeded): the baseline every pretraining must beat."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_resnet(arch, cifar_stem=cifar_stem)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIX)}
    return BackboneState(arch, cifar_stem, state, "random")


def resolve_backbone(checkpoint: str | None, cfg: CfgNode) -> BackboneState:
    """The checkpoint's backbone (random init when None), checked against MODEL.ARCH and
    MODEL.CIFAR_STEM so that a config and a checkpoint from different runs are not mixed."""
    if checkpoint is None:
        return random_backbone_state(cfg.MODEL.ARCH, cfg.MODEL.CIFAR_STEM, cfg.SEED)
    state = load_backbone_state(checkpoint)
    if (state.arch, state.cifar_stem) != (cfg.MODEL.ARCH, cfg.MODEL.CIFAR_STEM):
        raise EvalError(
            f"{checkpoint} holds a {state.arch} (CIFAR stem: {state.cifar_stem}) but the config "
            f"has MODEL.ARCH = {cfg.MODEL.ARCH}, MODEL.CIFAR_STEM = {cfg.MODEL.CIFAR_STEM}; pass "
            f"the pretraining config or MODEL.ARCH {state.arch} MODEL.CIFAR_STEM {state.cifar_stem}"
        )
    return state


def build_backbone(state: BackboneState) -> nn.Module:
    """A torchvision ResNet holding ``state``'s weights, its fc an identity: it outputs the
    pooled features."""
    model = build_resnet(state.arch, cifar_stem=state.cifar_stem)
    model.fc = nn.Identity()
    result = model.load_state_dict(state.state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(OPTIONAL_SUFFIX)]
    if missing or result.unexpected_keys:
        raise EvalError(
            f"backbone weights do not fit a {state.arch}: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model


def build_classifier(state: BackboneState, num_classes: int) -> nn.Module:
    """``build_backbone`` with a new fc of ``num_classes`` outputs, N(0, 0.01), zero bias."""
    if num_classes < 1:
        raise EvalError(f"num_classes = {num_classes}; expected at least one class")
    model = build_backbone(state)
    model.fc = nn.Linear(feature_dim(model), num_classes)
    nn.init.normal_(model.fc.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(model.fc.bias)
    return model


def pooled_features(resnet: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's pooled features, before its fc (class or projection head)."""
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
    x = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))
    return torch.flatten(resnet.avgpool(x), 1)


@torch.no_grad()
def compute_outputs(
    fn: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    dataset: Dataset,
    cfg: CfgNode,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(images)`` (``dim`` wide; batches of EVAL.BATCH_SIZE) and the labels of every labeled
    image, gathered from all ranks on every rank, in dataset order; unlabeled (-1) and undecodable
    images are left out."""
    world, rank = du.get_world_size(), du.get_rank()
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(
        shard,
        batch_size=cfg.EVAL.BATCH_SIZE,
        num_workers=cfg.DATA.NUM_WORKERS,
        collate_fn=collate_skip_bad,
    )
    per_rank = -(-len(dataset) // world)
    outputs = torch.zeros(per_rank, dim, device=device)
    labels = torch.full((per_rank,), -1, dtype=torch.long, device=device)
    filled = 0
    for images, targets, _ in loader:
        if len(targets):
            outputs[filled : filled + len(targets)] = fn(images.to(device)).float()
            labels[filled : filled + len(targets)] = targets.to(device)
            filled += len(targets)
    if filled < len(shard):
        logger.warning("%d images failed to decode; evaluated without them", len(shard) - filled)
    # Rank r holds images r, r + world, ...: interleaving the gathered shards restores the order.
    outputs = du.concat_all_gather(outputs).view(world, per_rank, dim).transpose(0, 1)
    labels = du.concat_all_gather(labels).view(world, per_rank).T.reshape(-1)
    outputs = outputs.reshape(-1, dim)
    keep = labels >= 0
    return outputs[keep], labels[keep]
