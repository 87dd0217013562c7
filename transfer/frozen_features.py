"""Frozen-backbone image features: detectron2's ResNet from the detection config, loaded from the
converted weights (``MODEL.WEIGHTS``, ``unimoco convert``), run in eval mode on centre crops,
one stage's output (``SVM.FEATURE``) averaged over space and L2-normalised."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.data.detection_utils import read_image
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from sklearn.preprocessing import normalize
from torchvision.transforms import v2

from unimoco.transfer.checkpoint import SafeDetectionCheckpointer
from unimoco.transfer.config import DetectionConfigError

logger = logging.getLogger("unimoco.detect")


class _CheckedCheckpointer(SafeDetectionCheckpointer):
    """Records the model's parameters that the weights file did not fill (``missing``); BN's
    ``num_batches_tracked`` counters, unused in eval mode and absent from converted weights, are
    neither recorded nor logged as missing."""

    missing: list[str] = []

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        missing = incompatible.missing_keys
        missing[:] = [k for k in missing if not k.endswith("num_batches_tracked")]
        self.missing = list(missing)
        return incompatible


def build_frozen_backbone(cfg: CfgNode) -> torch.nn.Module:
    """The ResNet up to stage ``SVM.FEATURE`` with ``MODEL.WEIGHTS`` loaded, in eval mode on
    ``MODEL.DEVICE``; weights that leave any of its parameters unset are an error (features of
    a half-random network would be scored without a word)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNETS.OUT_FEATURES = [cfg.SVM.FEATURE]
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    if cfg.MODEL.WEIGHTS:
        checkpointer = _CheckedCheckpointer(backbone)
        checkpointer.load(cfg.MODEL.WEIGHTS)
        if checkpointer.missing:
            raise DetectionConfigError(
                f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: no weights for {len(checkpointer.missing)} "
                f"of the backbone's parameters (e.g. {checkpointer.missing[0]}); expected a "
                f"converted ResNet-{cfg.MODEL.RESNETS.DEPTH} (unimoco convert)"
            )
    else:
        logger.warning("MODEL.WEIGHTS is empty: features of a randomly initialised backbone")
    return backbone.to(cfg.MODEL.DEVICE).eval()


class CentreCrop:
    """Dataset dict -> CHW float tensor: the image in ``INPUT.FORMAT``, its shorter side resized
    to ``SVM.RESIZE`` (bilinear, antialiased), the centre ``SVM.IMAGE_SIZE`` square cut out."""

    def __init__(self, cfg: CfgNode) -> None:
        self.format = cfg.INPUT.FORMAT
        self.transform = v2.Compose(
            [v2.Resize(cfg.SVM.RESIZE, antialias=True), v2.CenterCrop(cfg.SVM.IMAGE_SIZE)]
        )

    def __call__(self, dataset_dict: dict) -> torch.Tensor:
        image = read_image(dataset_dict["file_name"], format=self.format)
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return self.transform(image.float())


@torch.no_grad()
def extract_features(cfg: CfgNode, backbone: torch.nn.Module, dataset: list[dict]) -> np.ndarray:
    """``(images, channels)`` float32: the backbone's ``SVM.FEATURE`` output of each image of
    ``dataset`` (normalised by ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``), averaged over space and
    scaled to unit L2 norm, in the order of ``dataset``."""
    loader = build_detection_test_loader(
        dataset,
        mapper=CentreCrop(cfg),
        batch_size=cfg.SVM.BATCH_SIZE,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=torch.stack,
    )
    device = cfg.MODEL.DEVICE
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, device=device).view(1, -1, 1, 1)
    features = []
    for batch in loader:
        images = (batch.to(device) - mean) / std
        pooled = F.adaptive_avg_pool2d(backbone(images)[cfg.SVM.FEATURE], 1).flatten(1)
        features.append(pooled.float().cpu().numpy())
    return normalize(np.concatenate(features), norm="l2")
