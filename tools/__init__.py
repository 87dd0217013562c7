"""unimoco: UniMoCo pretraining of ResNet backbones and their transfer to detectron2."""

__version__ = "0.1.0"
