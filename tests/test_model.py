"""UniMoCo module: momentum update, queues, split BN grouping, shuffle BN, the forward pass."""

import copy

import pytest
import torch
import torch.nn as nn

from unimoco.pretrain.model.split_bn import SplitBatchNorm2d, convert_to_split_bn
from unimoco.pretrain.model.unimoco import UniMoCo, build_encoder


def _tiny(**kwargs) -> UniMoCo:
    torch.manual_seed(0)
    defaults = dict(arch="resnet18", dim=16, queue_size=12, cifar_stem=True, bn_splits=1)
    defaults.update(kwargs)
    return UniMoCo(**defaults)


def test_encoders_start_equal_and_key_encoder_has_no_grad():
    model = _tiny(head="mlp")
    for (name, pq), pk in zip(model.encoder_q.named_parameters(), model.encoder_k.parameters()):
        assert torch.equal(pq, pk), name
        assert not pk.requires_grad
    assert isinstance(model.encoder_q.fc, nn.Sequential)  # v2 MLP head: fc.0, fc.2
    assert model.encoder_q.fc[0].in_features == model.encoder_q.fc[0].out_features == 512
    assert isinstance(_tiny(head="fc").encoder_q.fc, nn.Linear)


def test_momentum_update_formula():
    model = _tiny(momentum=0.9)
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    before_k = [p.clone() for p in model.encoder_k.parameters()]
    q_params = [p.clone() for p in model.encoder_q.parameters()]
    model.momentum_update()
    for pk, old, pq in zip(model.encoder_k.parameters(), before_k, q_params):
        torch.testing.assert_close(pk, 0.9 * old + 0.1 * pq)


def test_enqueue_order_wrap_and_labels_in_step():
    model = _tiny(queue_size=10)
    keys = [torch.full((4, 16), float(i)) for i in range(3)]
    labels = [torch.tensor([i * 10 + j for j in range(4)]) for i in range(3)]
    for key, label in zip(keys, labels):
        model.enqueue(key, label)
    # 12 entries into 10 slots: the third batch wraps and overwrites slots 0 and 1.
    assert model.queue_ptr.item() == 2
    expected_rows = [2, 2, 0, 0, 1, 1, 1, 1, 2, 2]
    assert model.queue[:, 0].tolist() == [float(v) for v in expected_rows]
    assert model.queue_labels.tolist() == [22, 23, 2, 3, 10, 11, 12, 13, 20, 21]


def test_split_bn_groups_are_strided_and_running_stats_averaged():
    torch.manual_seed(0)
    bn = SplitBatchNorm2d(3, num_splits=2, momentum=0.5)
    x = torch.randn(6, 3, 4, 4) * 3 + 1
    out = bn(x)
    for j in range(2):  # sub-batch j holds samples j, j+S, j+2S, ...
        expected = nn.BatchNorm2d(3, momentum=0.5)(x[j::2])
        torch.testing.assert_close(out[j::2], expected)
    means = [x[j::2].mean(dim=(0, 2, 3)) for j in range(2)]
    torch.testing.assert_close(bn.running_mean, 0.5 * torch.stack(means).mean(0))
    bn.eval()
    torch.testing.assert_close(
        bn(x),
        nn.functional.batch_norm(
            x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
        ),
    )


def test_split_bn_conversion_keeps_state_dict_keys():
    encoder = build_encoder("resnet18", 8, "mlp", cifar_stem=True)
    keys = set(encoder.state_dict())
    convert_to_split_bn(encoder, 4)
    assert set(encoder.state_dict()) == keys
    assert sum(isinstance(m, SplitBatchNorm2d) for m in encoder.modules()) == 20


def test_split_bn_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="MOCO.BN_SPLITS"):
        SplitBatchNorm2d(3, num_splits=4)(torch.randn(6, 3, 2, 2))


def test_shuffle_with_full_batch_bn_gives_unshuffled_keys():
    """Full-batch BN is permutation invariant, so shuffle + unshuffle must be the identity."""
    model = _tiny()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        plain = nn.functional.normalize(model.encoder_k(x), dim=1)
        shuffled = model._encode_keys(x)
    torch.testing.assert_close(shuffled, plain, rtol=1e-4, atol=1e-5)


def test_split_bn_shuffle_matches_per_group_computation():
    model = _tiny(bn_splits=2)
    x = torch.randn(8, 3, 32, 32)
    torch.manual_seed(123)
    with torch.no_grad():
        keys = model._encode_keys(x)
    torch.manual_seed(123)
    perm = torch.randperm(8)
    reference = copy.deepcopy(model.encoder_k)
    for m in reference.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.num_splits = 1
    shuffled = x[perm]
    expected = torch.empty(8, 16)
    with torch.no_grad():
        for j in range(2):
            group = perm[j::2]
            expected[group] = nn.functional.normalize(reference(shuffled[j::2]), dim=1)
    torch.testing.assert_close(keys, expected, rtol=1e-4, atol=1e-5)


def test_forward_losses_and_enqueue_after_backward():
    model = _tiny(loss="unicon", co2_alpha=0.5, bn_splits=2)
    x_q, x_k = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    labels = torch.tensor([1, -1, 2, 1])
    out = model(x_q, x_k, labels)
    torch.testing.assert_close(out["loss"], out["loss_contrast"] + 0.5 * out["loss_co2"])
    out["loss"].backward()
    grads = [p.grad for p in model.encoder_q.parameters()]
    assert all(g is not None for g in grads)
    assert all(p.grad is None for p in model.encoder_k.parameters())
    model.enqueue(out["keys"], out["labels"])
    torch.testing.assert_close(model.queue[:4], out["keys"])
    assert model.queue_labels[:4].tolist() == [1, -1, 2, 1]
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(12))


def test_infonce_model_ignores_labels():
    model = _tiny(loss="infonce")
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(5)
    a = model(x, x, torch.tensor([0, 0, 0, 0]))["loss"]
    model2 = _tiny(loss="infonce")
    torch.manual_seed(5)
    b = model2(x, x, None)["loss"]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("loss", ["unicon", "infonce"])
def test_a_step_never_copies_the_queue(loss):
    """Under bf16 autocast, forward + backward + enqueue read and write the queues in place: no
    op copies or casts a whole queue (at K = 65536 each copy would cost 32 MB of traffic)."""
    queue_size, dim = 1000, 16  # sizes no activation of the tiny step has
    model = _tiny(loss=loss, queue_size=queue_size, co2_alpha=0.5, bn_splits=2)
    pointers = (model.queue.data_ptr(), model.queue_labels.data_ptr())
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([1, -1, 2, 1])
    copying = {"aten::copy_", "aten::clone", "aten::_to_copy", "aten::cat", "aten::contiguous"}
    with torch.profiler.profile(record_shapes=True) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, x.clone(), labels)
        out["loss"].backward()
        model.enqueue(out["keys"], out["labels"])
    queue_shapes = ([queue_size, dim], [queue_size])
    copies = [
        (event.key, shapes)
        for event in prof.key_averages(group_by_input_shape=True)
        if event.key in copying
        for shapes in [event.input_shapes]
        if any(list(shape) in queue_shapes for shape in shapes)
    ]
    assert copies == []
    assert (model.queue.data_ptr(), model.queue_labels.data_ptr()) == pointers
    torch.testing.assert_close(model.queue[:4], out["keys"].float())


@pytest.mark.parametrize("loss", ["unicon", "infonce"])
def test_symmetric_loss_is_the_mean_of_both_directions_and_queues_both_keys(loss):
    """LOSS.SYMMETRIC: ½[ℓ(q₁, k₂) + ℓ(q₂, k₁)] (CO2 likewise), computed here from the encoders
    directly, and both key batches with their labels enter the queue."""
    from unimoco.pretrain import losses

    model = _tiny(loss=loss, co2_alpha=0.5, symmetric=True, shuffle_bn=False)
    reference = copy.deepcopy(model)
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    labels = torch.tensor([1, -1, 2, 1])
    reference.queue_labels[:6] = torch.tensor([1, 1, 2, -1, 3, 2])
    model.queue_labels.copy_(reference.queue_labels)
    out = model(x1, x2, labels)

    reference.momentum_update()
    norm = torch.nn.functional.normalize
    q1, q2 = norm(reference.encoder_q(x1), dim=1), norm(reference.encoder_q(x2), dim=1)
    with torch.no_grad():
        k1, k2 = norm(reference.encoder_k(x1), dim=1), norm(reference.encoder_k(x2), dim=1)
    queue, queue_labels, tau = reference.queue, reference.queue_labels, reference.temperature

    def contrast(q, k):
        if loss == "infonce":
            return losses.info_nce(q, k, queue, tau)
        return losses.unicon(q, k, queue, labels, queue_labels, tau)

    expected = 0.5 * (contrast(q1, k2) + contrast(q2, k1))
    expected_co2 = 0.5 * (losses.co2(q1, k2, queue, 0.05) + losses.co2(q2, k1, queue, 0.05))
    torch.testing.assert_close(out["loss_contrast"], expected)
    torch.testing.assert_close(out["loss_co2"], expected_co2)
    torch.testing.assert_close(out["loss"], expected + 0.5 * expected_co2)
    torch.testing.assert_close(out["keys"], torch.cat([k2, k1]))
    assert out["labels"].tolist() == [1, -1, 2, 1] * 2

    out["loss"].backward()
    model.enqueue(out["keys"], out["labels"])
    torch.testing.assert_close(model.queue[:8], torch.cat([k2, k1]))
    assert model.queue_labels[:8].tolist() == [1, -1, 2, 1] * 2
    assert model.queue_ptr.item() == 8
