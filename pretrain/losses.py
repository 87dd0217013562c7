"""Contrastive losses over a queue of keys: InfoNCE (MoCo), UniCon (UniMoCo) and CO2.

All take L2-normalized ``q`` and ``k`` (N×D) and ``queue`` (K×D), compute in at least float32
whatever the input dtype (bf16 logits over K = 65536 entries lose the positive), and return the
batch mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _similarities(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q·k / τ`` (N) and ``q·Qᵀ / τ`` (N×K), in float32 or wider."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k, queue = q.to(dtype), k.to(dtype), queue.to(dtype)
    return (q * k).sum(dim=1) / temperature, (q @ queue.T) / temperature


def info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's loss: cross-entropy of ``[q·k, q·Qᵀ] / τ`` with the positive at index 0."""
    s_pos, s_queue = _similarities(q, k, queue, temperature)
    logits = torch.cat([s_pos[:, None], s_queue], dim=1)
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def queue_positive_mask(labels: torch.Tensor, queue_labels: torch.Tensor) -> torch.Tensor:
    """N×K mask of the queue entries that share the query's label; label -1 never matches."""
    return (labels[:, None] == queue_labels[None, :]) & (labels[:, None] >= 0)


def _label_similarities(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s_pos, s_queue, positive mask, logsumexp over each query's negatives)``; masked
    entries take the dtype's lowest finite value, so a row without negatives stays finite."""
    s_pos, s_queue = _similarities(q, k, queue, temperature)
    positive = queue_positive_mask(labels, queue_labels)
    lowest = torch.finfo(s_queue.dtype).min
    lse_negatives = torch.logsumexp(s_queue.masked_fill(positive, lowest), dim=1)
    return s_pos, s_queue, positive, lse_negatives


def unicon(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """UniCon: ``softplus(logsumexp_neg(s⁻) + logsumexp_pos(−s⁺))`` per query, batch mean.

    Positives of query i are its own key and every queued key labeled ``labels[i]`` (when it is
    not -1); all other queued keys are negatives. Masked entries are filled with the dtype's
    lowest finite value, not -inf, so that a row with no negatives gives a zero loss and a zero
    gradient instead of NaN.
    """
    s_pos, s_queue, positive, lse_negatives = _label_similarities(
        q, k, queue, labels, queue_labels, temperature
    )
    neg_positive_queue = (-s_queue).masked_fill(~positive, torch.finfo(s_queue.dtype).min)
    lse_neg_positives = torch.logsumexp(torch.cat([-s_pos[:, None], neg_positive_queue], 1), dim=1)
    return F.softplus(lse_negatives + lse_neg_positives).mean()


def unicon_mean_positives(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """UniCon with its positives averaged (SupCon's "out" form) instead of pooled: per query,
    the mean over positives p of ``softplus(logsumexp_neg(s⁻) − s⁺_p)``, batch mean.

    Same positives, negatives and one-positive case (InfoNCE) as :func:`unicon`. Pooling all
    pairs in one log makes UniCon lowest at collapse for features that do not yet separate the
    classes; the mean is flat there, so training from scratch with many labels does not stall.
    """
    s_pos, s_queue, positive, lse_negatives = _label_similarities(
        q, k, queue, labels, queue_labels, temperature
    )
    own = F.softplus(lse_negatives - s_pos)
    queued = F.softplus(lse_negatives[:, None] - s_queue).masked_fill(~positive, 0.0).sum(dim=1)
    return ((own + queued) / (1.0 + positive.sum(dim=1))).mean()


def uniform_similarity_loss(
    labels: torch.Tensor, queue_labels: torch.Tensor, mean_positives: bool = False
) -> torch.Tensor:
    """The loss when every similarity is equal (no feature learned, or all keys collapsed to one
    point): ``log(1 + N_neg·N_pos)`` per query for UniCon, ``log(1 + N_neg)`` with the positives
    averaged; batch mean. With no queued key of the query's label (unlabeled queries, InfoNCE)
    both are ``log(K + 1)``."""
    matches = queue_positive_mask(labels, queue_labels).sum(dim=1, dtype=torch.float32)
    pairs = (len(queue_labels) - matches) * (1.0 if mean_positives else 1.0 + matches)
    return torch.log1p(pairs).mean()


def mean_pairwise_cosine(keys: torch.Tensor) -> torch.Tensor:
    """Mean cosine between the distinct rows of L2-normalized ``keys``: near 1 when every image
    maps to one point (collapse), near 0 for spread features."""
    n = len(keys)
    total = keys.float().sum(dim=0)
    return ((total @ total) - n) / max(n * (n - 1), 1)


def co2(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """CO2's consistency term: symmetric KL between query and key softmaxes over the queue.

    The key's distribution ``P = softmax(k·Qᵀ/τc)`` is the pseudo label (no gradient); the query's
    ``R = softmax(q·Qᵀ/τc)`` carries the gradient to the query encoder. Over the K queue entries
    only: the positive pair itself is not part of either distribution.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    queue = queue.to(dtype)
    log_p = F.log_softmax((k.detach().to(dtype) @ queue.T) / temperature, dim=1)
    log_r = F.log_softmax((q.to(dtype) @ queue.T) / temperature, dim=1)
    kl_p_r = (log_p.exp() * (log_p - log_r)).sum(dim=1)
    kl_r_p = (log_r.exp() * (log_r - log_p)).sum(dim=1)
    return (0.5 * (kl_p_r + kl_r_p)).mean()
