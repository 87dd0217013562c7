"""The pretraining optimizer: SGD with momentum (MoCo v1/v2) or AdamW (MoCo v3's choice).

AdamW matters for short runs from scratch: on the shapes demo's 310 steps, only the AdamW
backbone gives the fine-tuned detector a gain over random init (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from fvcore.common.config import CfgNode

OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(
    cfg: CfgNode, params: Iterable[torch.nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over ``params`` at ``lr``, with ``SOLVER.WEIGHT_DECAY`` on every
    parameter (as MoCo does); ``SOLVER.MOMENTUM`` is SGD's momentum and unused by AdamW."""
    name = cfg.SOLVER.OPTIMIZER
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    raise ValueError(f"SOLVER.OPTIMIZER = {name!r}; expected one of {', '.join(OPTIMIZERS)}")
