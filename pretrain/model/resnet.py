"""torchvision ResNets as encoders, with the CIFAR stem option for 32-px images."""

from __future__ import annotations

import torch.nn as nn
import torchvision

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_resnet(arch: str, num_classes: int = 1000, cifar_stem: bool = False) -> nn.Module:
    """A randomly initialised torchvision ResNet; ``cifar_stem`` swaps the 7x7/2 conv and the
    max-pool for one 3x3/1 conv (the usual change for 32-px inputs, as in MoCo's CIFAR demo)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled backbone features (512 for R18/34, 2048 for R50/101)."""
    return model.fc.in_features if isinstance(model.fc, nn.Linear) else model.inplanes
