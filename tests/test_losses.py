"""Losses against independent computations: naive double sums, MoCo's cross-entropy, KL."""

import math

import pytest
import torch
import torch.nn.functional as F

from unimoco.pretrain import losses


def _normalized(*shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen, dtype=dtype), dim=-1)


def _naive_unicon(q, k, queue, labels, queue_labels, tau):
    """ℓ_i = log(1 + Σ_n Σ_p exp(s⁻_n − s⁺_p)), written as the literal double sum."""
    total = 0.0
    for i in range(len(q)):
        pos = [float(q[i] @ k[i]) / tau]
        neg = []
        for j in range(len(queue)):
            s = float(q[i] @ queue[j]) / tau
            if labels[i] >= 0 and queue_labels[j] == labels[i]:
                pos.append(s)
            else:
                neg.append(s)
        total += math.log(1 + sum(math.exp(n - p) for n in neg for p in pos))
    return total / len(q)


def test_unicon_equals_info_nce_when_no_label_matches():
    q, k, queue = _normalized(8, 16), _normalized(8, 16, seed=1), _normalized(50, 16, seed=2)
    labels = torch.tensor([0, 1, 2, 3, -1, -1, 4, 5])
    queue_labels = torch.randint(6, 10, (50,), generator=torch.Generator().manual_seed(3))
    queue_labels[::3] = -1
    expected = losses.info_nce(q, k, queue, 0.2)
    got = losses.unicon(q, k, queue, labels, queue_labels, 0.2)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_info_nce_equals_cross_entropy_of_moco_logits():
    q, k, queue = _normalized(4, 8), _normalized(4, 8, seed=1), _normalized(20, 8, seed=2)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.07
    expected = -torch.log_softmax(logits, 1)[:, 0].mean()
    torch.testing.assert_close(losses.info_nce(q, k, queue, 0.07), expected)


def test_unicon_equals_naive_double_sum():
    q, k, queue = _normalized(6, 8), _normalized(6, 8, seed=1), _normalized(30, 8, seed=2)
    labels = torch.tensor([0, 1, -1, 2, 0, 1])
    queue_labels = torch.randint(-1, 3, (30,), generator=torch.Generator().manual_seed(4))
    expected = _naive_unicon(q, k, queue, labels, queue_labels, 0.1)
    got = losses.unicon(q, k, queue, labels, queue_labels, 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_hand_built_positives():
    """Query along e0: its key and the two queue entries of its label are positives."""
    e = torch.eye(3, dtype=torch.float64)
    q, k = e[:1], e[:1]
    queue = torch.stack([e[0], e[1], -e[0], e[2]])
    queue_labels = torch.tensor([7, 7, 3, -1])
    tau = 0.5
    s_pos = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64) / tau  # own key, queue 0, queue 1
    s_neg = torch.tensor([-1.0, 0.0], dtype=torch.float64) / tau  # queue 2, queue 3
    expected = torch.log1p(torch.exp(s_neg[:, None] - s_pos[None, :]).sum())
    got = losses.unicon(q, k, queue, torch.tensor([7]), queue_labels, tau)
    torch.testing.assert_close(got, expected)
    # The same query unlabeled: one positive, four negatives.
    unlabeled = losses.unicon(q, k, queue, torch.tensor([-1]), queue_labels, tau)
    torch.testing.assert_close(unlabeled, losses.info_nce(q, k, queue, tau))


def test_unlabeled_queue_entries_never_positive():
    q, k, queue = _normalized(4, 8), _normalized(4, 8, seed=1), _normalized(10, 8, seed=2)
    labels = torch.full((4,), -1)
    queue_labels = torch.full((10,), -1)
    mask = losses.queue_positive_mask(labels, queue_labels)
    assert not mask.any()
    torch.testing.assert_close(
        losses.unicon(q, k, queue, labels, queue_labels, 0.2), losses.info_nce(q, k, queue, 0.2)
    )


def test_unicon_finite_with_large_queue_in_bf16():
    n, d, K = 16, 128, 65536
    q = _normalized(n, d, dtype=torch.float32).bfloat16().requires_grad_()
    k = _normalized(n, d, dtype=torch.float32, seed=1).bfloat16()
    queue = _normalized(K, d, dtype=torch.float32, seed=2).bfloat16()
    labels = torch.arange(n) % 4
    queue_labels = torch.randint(-1, 4, (K,))
    for tau in (0.2, 0.07, 0.01):
        loss = losses.unicon(q, k, queue, labels, queue_labels, tau)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, q)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unicon_all_positive_row_is_zero_with_finite_gradient():
    """Fully supervised with one class: no negatives, loss 0, and no NaN gradient."""
    q = _normalized(2, 8, dtype=torch.float32).requires_grad_()
    k, queue = (
        _normalized(2, 8, dtype=torch.float32, seed=1),
        _normalized(5, 8, dtype=torch.float32),
    )
    loss = losses.unicon(q, k, queue, torch.zeros(2, dtype=torch.long), torch.zeros(5).long(), 0.2)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(q.grad).all()


def test_co2_against_independent_kl():
    q, k, queue = _normalized(5, 8), _normalized(5, 8, seed=1), _normalized(12, 8, seed=2)
    tau = 0.05
    p = torch.softmax(k @ queue.T / tau, 1)
    r = torch.softmax(q @ queue.T / tau, 1)
    kl = torch.nn.functional.kl_div
    expected = 0.5 * (kl(r.log(), p, reduction="batchmean") + kl(p.log(), r, reduction="batchmean"))
    torch.testing.assert_close(losses.co2(q, k, queue, tau), expected)
    assert losses.co2(q, q, queue, tau).item() == pytest.approx(0.0, abs=1e-12)


def test_co2_gradient_reaches_query_encoder_not_key():
    encoder = torch.nn.Linear(8, 4)
    x = torch.randn(6, 8)
    q = F.normalize(encoder(x), dim=1)
    k = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    queue = _normalized(10, 4, dtype=torch.float32)
    loss = losses.co2(q, k, queue, 0.05)
    assert loss.requires_grad
    loss.backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    assert k.grad is None


def test_unicon_mean_positives_matches_a_loop_over_queries_and_positives():
    """Per query, the mean over its positives p of log(1 + Σ_n exp(s_n − s_p)), by hand."""
    torch.manual_seed(3)
    q, k = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    queue = F.normalize(torch.randn(12, 8), dim=1)
    labels = torch.tensor([0, 1, -1, 2, 0])
    queue_labels = torch.tensor([0, 0, 1, -1, 2, 2, 2, 1, 0, -1, 3, 3])
    temperature = 0.5
    per_query = []
    for i in range(5):
        sims = (queue @ q[i]) / temperature
        own = (q[i] @ k[i]) / temperature
        positive = (queue_labels == labels[i]) & (labels[i] >= 0)
        negatives = sims[~positive]
        positives = [own, *sims[positive]]
        terms = [torch.log1p(torch.exp(negatives - s_p).sum()) for s_p in positives]
        per_query.append(torch.stack(terms).mean())
    expected = torch.stack(per_query).mean()
    got = losses.unicon_mean_positives(q, k, queue, labels, queue_labels, temperature)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    unlabeled = torch.full_like(labels, -1)
    assert losses.unicon_mean_positives(
        q, k, queue, unlabeled, queue_labels, temperature
    ).item() == pytest.approx(losses.info_nce(q, k, queue, temperature).item(), rel=1e-5)
