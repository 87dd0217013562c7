"""Weighted kNN on frozen, L2-normalised backbone features (the InstDisc / MoCo monitor).

The training split (eval transform, all its labels) is the memory bank; each held-out image
takes its ``k`` most cosine-similar bank entries, weighs them by exp(similarity / T) and sums
the weights per class. Online every EVAL.KNN_PERIOD epochs of pretraining and as ``unimoco knn``.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from fvcore.common.config import CfgNode

from ..backbone import BackboneState
from ..log_names import LOGGER_NAME
from ..model.resnet import feature_dim
from .commands import run_command
from .data import build_eval_splits
from .features import EvalError, build_backbone, compute_outputs, pooled_features
from .metrics import topk_accuracy

logger = logging.getLogger(LOGGER_NAME)

QUERY_CHUNK = 1024  # queries per similarity matrix, to bound memory with a large bank


class ScalarWriter(Protocol):
    """Where the online monitor writes its accuracies (the run's ``MetricsWriter``)."""

    def write(self, step: int, scalars: dict[str, float]) -> None: ...


def knn_scores(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Class scores (queries x classes): the sum of exp(sim / T) over the ``k`` bank entries of
    highest cosine similarity ``sim`` that carry each class. Features must be L2-normalised."""
    if len(bank) == 0:
        raise EvalError("kNN: the memory bank is empty (no labeled training images)")
    if bank_labels.min() < 0 or bank_labels.max() >= num_classes:
        raise EvalError(
            f"kNN: bank labels span [{int(bank_labels.min())}, {int(bank_labels.max())}]; "
            f"expected labels in [0, {num_classes})"
        )
    k = min(k, len(bank))
    scores = []
    for chunk in queries.split(QUERY_CHUNK):
        top_sim, top_index = (chunk @ bank.T).topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        class_scores = torch.zeros(len(chunk), num_classes, device=chunk.device)
        scores.append(class_scores.scatter_add_(1, bank_labels[top_index], weights))
    return torch.cat(scores)


def knn_evaluate(model: nn.Module, cfg: CfgNode, device: torch.device) -> dict[str, float]:
    """kNN top-1/top-5 (%) of a torchvision ResNet's pooled features (its fc is ignored), in eval
    mode; the model's train/eval mode is restored afterwards."""
    train, val, num_classes = build_eval_splits(cfg)
    dim = feature_dim(model)

    def features(images: torch.Tensor) -> torch.Tensor:
        return F.normalize(pooled_features(model, images), dim=1)

    was_training = model.training
    model.eval()
    try:
        bank, bank_labels = compute_outputs(features, dim, train, cfg, device)
        queries, labels = compute_outputs(features, dim, val, cfg, device)
    finally:
        model.train(was_training)
    scores = knn_scores(queries, bank, bank_labels, num_classes, cfg.EVAL.KNN_K, cfg.EVAL.KNN_T)
    return {**topk_accuracy(scores, labels), "num_train": len(bank), "num_val": len(queries)}


def knn_monitor(
    encoder: nn.Module,
    cfg: CfgNode,
    device: torch.device,
    epoch: int,
    step: int,
    metrics: ScalarWriter,
) -> None:
    """The online monitor, called by the pretraining loop after each epoch: every
    EVAL.KNN_PERIOD epochs, kNN accuracy of ``encoder`` (the query encoder) to the metrics and
    the log."""
    period = cfg.EVAL.KNN_PERIOD
    if not period or epoch % period:
        return
    result = knn_evaluate(encoder, cfg, device)
    metrics.write(step, {"knn_top1": result["top1"], "knn_top5": result["top5"]})
    logger.info(
        "epoch %d: kNN top-1 %.2f  top-5 %.2f (k %d, T %g)",
        epoch,
        result["top1"],
        result["top5"],
        cfg.EVAL.KNN_K,
        cfg.EVAL.KNN_T,
    )


def evaluate_checkpoint(state: BackboneState, cfg: CfgNode, device: torch.device) -> dict:
    """``unimoco knn``: kNN accuracy of a loaded backbone."""
    return knn_evaluate(build_backbone(state).to(device), cfg, device)


def main(argv: list[str] | None = None) -> int:
    """``unimoco knn --checkpoint C [--config-file F] [KEY VALUE ...]``."""
    return run_command("knn", "Weighted kNN accuracy of a backbone", argv, evaluate_checkpoint)
