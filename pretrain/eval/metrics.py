"""Top-k accuracy, the number every classification protocol reports."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(
    scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Percent of rows whose target is among the ``k`` highest scores, as ``{"top{k}": ...}``;
    ``k`` is capped at the number of classes (top-5 of a 3-class problem is 100 %)."""
    if scores.ndim != 2 or len(scores) != len(targets):
        raise ValueError(
            f"topk_accuracy: scores of shape {list(scores.shape)} for {len(targets)} targets; "
            "expected N x C scores and N targets"
        )
    if len(targets) == 0:
        raise ValueError("topk_accuracy: no samples to score")
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == targets.to(ranked.device).view(-1, 1)
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).double().mean().item() for k in ks}
