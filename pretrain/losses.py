"""Contrastive losses over a queue of keys: InfoNCE (MoCo), UniCon (UniMoCo) and CO2.

All take L2-normalized ``q`` and ``k`` (N×D) and ``queue`` (K×D), compute in at least float32
whatever the input dtype (bf16 logits over K = 65536 entries lose the positive), and return the
batch mean. An optional ``filled`` mask (K, bool) leaves out queue entries that hold no key yet:
MoCo's queue starts as random unit vectors, and on short schedules telling every real key apart
from those is learned fastest by mapping all images to one point (docs/benchmarks.md).
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


def _lowest(x: torch.Tensor) -> float:
    """The fill for masked logits: finite, so an empty row gives 0, not NaN, in logsumexp."""
    return torch.finfo(x.dtype).min


def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    filled: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoCo's loss: cross-entropy of ``[q·k, q·Qᵀ] / τ`` with the positive at index 0."""
    s_pos, s_queue = _similarities(q, k, queue, temperature)
    if filled is not None:
        s_queue = s_queue.masked_fill(~filled, _lowest(s_queue))
    logits = torch.cat([s_pos[:, None], s_queue], dim=1)
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def queue_positive_mask(labels: torch.Tensor, queue_labels: torch.Tensor) -> torch.Tensor:
    """N×K mask of the queue entries that share the query's label; label -1 never matches."""
    return (labels[:, None] == queue_labels[None, :]) & (labels[:, None] >= 0)


def unicon(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float,
    filled: torch.Tensor | None = None,
) -> torch.Tensor:
    """UniCon: ``softplus(logsumexp_neg(s⁻) + logsumexp_pos(−s⁺))`` per query, batch mean.

    Positives of query i are its own key and every queued key labeled ``labels[i]`` (when it is
    not -1); all other (filled) queued keys are negatives. Masked entries are filled with the
    dtype's lowest finite value, not -inf, so that a row with no negatives gives a zero loss and
    a zero gradient instead of NaN.
    """
    s_pos, s_queue = _similarities(q, k, queue, temperature)
    positive = queue_positive_mask(labels, queue_labels)
    lowest = _lowest(s_queue)
    not_negative = positive
    if filled is not None:
        positive = positive & filled
        not_negative = not_negative | ~filled
    lse_negatives = torch.logsumexp(s_queue.masked_fill(not_negative, lowest), dim=1)
    neg_positive_queue = (-s_queue).masked_fill(~positive, lowest)
    lse_neg_positives = torch.logsumexp(torch.cat([-s_pos[:, None], neg_positive_queue], 1), dim=1)
    return F.softplus(lse_negatives + lse_neg_positives).mean()


def co2(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    filled: torch.Tensor | None = None,
) -> torch.Tensor:
    """CO2's consistency term: symmetric KL between query and key softmaxes over the queue.

    The key's distribution ``P = softmax(k·Qᵀ/τc)`` is the pseudo label (no gradient); the query's
    ``R = softmax(q·Qᵀ/τc)`` carries the gradient to the query encoder. Over the K queue entries
    only (the filled ones, when ``filled`` is given; 0 while none is): the positive pair itself is
    not part of either distribution.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    queue = queue.to(dtype)
    s_key = (k.detach().to(dtype) @ queue.T) / temperature
    s_query = (q.to(dtype) @ queue.T) / temperature
    if filled is not None:
        s_key = s_key.masked_fill(~filled, _lowest(s_key))
        s_query = s_query.masked_fill(~filled, _lowest(s_query))
    log_p = F.log_softmax(s_key, dim=1)
    log_r = F.log_softmax(s_query, dim=1)
    kl_terms = 0.5 * (log_p.exp() - log_r.exp()) * (log_p - log_r)
    if filled is not None:
        kl_terms = kl_terms.masked_fill(~filled, 0.0)
    return kl_terms.sum(dim=1).mean()
