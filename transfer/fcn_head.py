"""The FCN head of MoCo's semantic segmentation transfer (MoCo appendix A.5): on one backbone
feature map, ``NUM_CONVS`` 3x3 convs of ``CONVS_DIM`` channels with dilation ``DILATION``, each
with a norm and ReLU, then a 1x1 classifier; the logits are bilinearly upsampled by the feature's
stride (COMMON_STRIDE). It plugs into detectron2's ``SemanticSegmentor`` through
``SEM_SEG_HEADS_REGISTRY``."""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import CfgNode
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from unimoco.transfer.config import DetectionConfigError


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(nn.Module):
    """Dilated 3x3 convs and a 1x1 classifier on ``IN_FEATURES[0]``; training returns the
    cross-entropy (pixels at ``IGNORE_VALUE`` left out), inference the upsampled logits."""

    def __init__(self, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> None:
        super().__init__()
        head = cfg.MODEL.SEM_SEG_HEAD
        if len(head.IN_FEATURES) != 1:
            raise DetectionConfigError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES = {list(head.IN_FEATURES)}: FCNHead reads one "
                "feature map, e.g. ['res5']"
            )
        self.in_feature = head.IN_FEATURES[0]
        if self.in_feature not in input_shape:
            raise DetectionConfigError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES = [{self.in_feature!r}] is not a backbone "
                f"output; the backbone gives {', '.join(sorted(input_shape))} "
                "(MODEL.RESNETS.OUT_FEATURES)"
            )
        self.ignore_value = head.IGNORE_VALUE
        self.loss_weight = head.LOSS_WEIGHT
        # The logits are upsampled by COMMON_STRIDE: it must be the feature's stride (16 with
        # res5 dilated, 32 without), or they would not cover the image.
        self.stride = head.COMMON_STRIDE
        if self.stride != input_shape[self.in_feature].stride:
            raise DetectionConfigError(
                f"MODEL.SEM_SEG_HEAD.COMMON_STRIDE = {self.stride} but {self.in_feature} has "
                f"stride {input_shape[self.in_feature].stride}; set it to that"
            )
        channels = input_shape[self.in_feature].channels
        use_bias = not head.NORM
        convs = []
        for index in range(head.NUM_CONVS):
            conv = Conv2d(
                channels if index == 0 else head.CONVS_DIM,
                head.CONVS_DIM,
                kernel_size=3,
                padding=head.DILATION,
                dilation=head.DILATION,
                bias=use_bias,
                norm=get_norm(head.NORM, head.CONVS_DIM),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            convs.append(conv)
        self.convs = nn.Sequential(*convs)
        self.predictor = Conv2d(
            head.CONVS_DIM if head.NUM_CONVS else channels, head.NUM_CLASSES, kernel_size=1
        )
        nn.init.normal_(self.predictor.weight, 0, 0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """``(logits, {})`` in inference; ``(None, {"loss_sem_seg": loss})`` in training."""
        logits = self.predictor(self.convs(features[self.in_feature]))
        logits = F.interpolate(
            logits, scale_factor=self.stride, mode="bilinear", align_corners=False
        )
        if not self.training:
            return logits, {}
        return None, {"loss_sem_seg": self.losses(logits, targets)}

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labelled pixels. The logits cover ceil(size / stride) * stride
        pixels, as many as the image or more: the targets are padded with the ignore value to
        that size, so pixel (y, x) meets the same logit as in inference, where detectron2 crops
        the logits' top-left image-sized corner."""
        height, width = logits.shape[-2:]
        pad = (0, width - targets.shape[-1], 0, height - targets.shape[-2])
        targets = F.pad(targets, pad, value=self.ignore_value)
        if not (targets != self.ignore_value).any():
            return logits.sum() * 0.0  # no labelled pixel: a zero loss, not NaN
        loss = F.cross_entropy(logits, targets, reduction="mean", ignore_index=self.ignore_value)
        return loss * self.loss_weight
