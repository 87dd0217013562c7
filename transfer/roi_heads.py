"""The C4 ROI head of the MoCo detection recipe: res5 followed by an extra norm layer.

Self-supervised features are not scaled like supervised ones; a norm after res5 (trained with
the detector) puts them on the scale the box predictor expects. Unlike detectron2's
``Res5ROIHeads``, res5 is built from BasicBlocks for ResNet-18/34, so R18-C4 works too.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import get_norm
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads
from torch import nn

# Blocks in res5 of the BasicBlock ResNets.
_BASIC_RES5_BLOCKS = {18: 2, 34: 3}


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` with a norm (``MODEL.RESNETS.NORM``) after res5, for any ResNet depth."""

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode) -> tuple[nn.Sequential, int]:
        depth = cfg.MODEL.RESNETS.DEPTH
        if depth in _BASIC_RES5_BLOCKS:
            num_blocks = _BASIC_RES5_BLOCKS[depth]
            out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8  # res5 is 8x res2
            blocks = ResNet.make_stage(
                BasicBlock,
                num_blocks,
                stride_per_block=[2] + [1] * (num_blocks - 1),
                in_channels=out_channels // 2,
                out_channels=out_channels,
                norm=cfg.MODEL.RESNETS.NORM,
            )
            res5 = nn.Sequential(*blocks)
        else:
            res5, out_channels = super()._build_res5_block(cfg)
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return res5, out_channels
