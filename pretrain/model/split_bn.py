"""Split batch norm: BN statistics over S sub-batches, to emulate S GPUs on one process.

MoCo's shuffle BN needs the keys' BN statistics to come from other images than the queries';
on one device that is done by computing statistics per sub-batch and shuffling the key batch.
No library ships this layer, hence it is written here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are computed per sub-batch of N / ``num_splits``.

    The running statistics are the mean over sub-batches, so the state dict keys and the eval
    behaviour are those of a plain ``BatchNorm2d``.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        if n % self.num_splits:
            raise ValueError(
                f"split BN: batch of {n} is not divisible into {self.num_splits} splits "
                "(set MOCO.BN_SPLITS to a divisor of the per-process batch)"
            )
        splits = self.num_splits
        running_mean = self.running_mean.repeat(splits)
        running_var = self.running_var.repeat(splits)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = 0.1 if self.momentum is None else self.momentum
        # Folding the sub-batches into channels gives each its own statistics in one call.
        out = F.batch_norm(
            x.reshape(n // splits, c * splits, h, w),
            running_mean,
            running_var,
            self.weight.repeat(splits),
            self.bias.repeat(splits),
            True,
            momentum,
            self.eps,
        ).reshape(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(running_mean.view(splits, c).mean(dim=0))
            self.running_var.copy_(running_var.view(splits, c).mean(dim=0))
        return out


def convert_to_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``SplitBatchNorm2d`` with the same state."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SplitBatchNorm2d):
        split = SplitBatchNorm2d(
            module.num_features, num_splits, eps=module.eps, momentum=module.momentum
        )
        split.load_state_dict(module.state_dict())
        return split
    for name, child in module.named_children():
        setattr(module, name, convert_to_split_bn(child, num_splits))
    return module
