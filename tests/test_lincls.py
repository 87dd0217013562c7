"""Linear protocol: the schedule, a separable problem, and a backbone that must not move."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.eval.data import build_eval_splits, classifier_train_transform
from unimoco.pretrain.eval.features import build_classifier, random_backbone_state
from unimoco.pretrain.eval.lincls import (
    BackboneChangedError,
    check_backbone_unchanged,
    freeze_backbone,
    lincls_lr,
    run_lincls,
    train_linear_on_features,
    train_linear_standard,
)
from unimoco.pretrain.eval.metrics import topk_accuracy

# Digits at their native 8 px with an R18: an epoch of the standard protocol takes seconds.
DIGITS_16 = [
    "DATA.NAME", "digits", "DATA.DIGITS.SIZE", "8", "INPUT.SIZE", "8",
    "MODEL.ARCH", "resnet18", "DATA.NUM_WORKERS", "0", "EVAL.BATCH_SIZE", "512",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def test_lr_steps_at_epochs_60_and_80():
    lrs = {epoch: lincls_lr(epoch, 30.0, (60, 80), 0.1) for epoch in (0, 59, 60, 79, 80, 99)}
    assert lrs == pytest.approx({0: 30.0, 59: 30.0, 60: 3.0, 79: 3.0, 80: 0.3, 99: 0.3})


def test_default_config_is_the_moco_protocol():
    lincls = load_cfg().LINCLS
    assert (lincls.EPOCHS, lincls.BATCH_SIZE, lincls.BASE_LR) == (100, 256, 30.0)
    assert (lincls.MOMENTUM, lincls.WEIGHT_DECAY, tuple(lincls.STEPS)) == (0.9, 0.0, (60, 80))
    assert lincls.MODE == "standard"


def test_head_reaches_high_accuracy_on_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(5, 32, generator=generator)
    labels = torch.arange(5).repeat(60)
    features = centres[labels] + torch.randn(300, 32, generator=generator)
    cfg = load_cfg(None, ["LINCLS.EPOCHS", "30", "LINCLS.BATCH_SIZE", "64", "LINCLS.STEPS",
                          "(20, 25)", "LINCLS.BASE_LR", "1.0"])  # fmt: skip
    head = nn.Linear(32, 5)
    train_linear_on_features(head, features[:200], labels[:200], cfg)
    with torch.no_grad():
        accuracy = topk_accuracy(head(features[200:]), labels[200:])["top1"]
    assert accuracy >= 95.0


def test_standard_training_moves_the_head_and_nothing_else():
    cfg = load_cfg(None, DIGITS_16 + ["LINCLS.EPOCHS", "1", "LINCLS.BATCH_SIZE", "512"])
    state = random_backbone_state("resnet18", False, seed=0)
    model = build_classifier(state, 10)
    head_before = model.fc.weight.detach().clone()
    assert head_before.std().item() == pytest.approx(0.01, rel=0.1)  # N(0, 0.01)
    train, _, _ = build_eval_splits(cfg, classifier_train_transform(8, (0.08, 1.0)))
    train_linear_standard(model, train, cfg, torch.device("cpu"))
    assert not torch.equal(model.fc.weight, head_before)
    check_backbone_unchanged(model, state.state_dict)  # BN statistics too: eval mode


def test_guard_catches_a_backbone_that_trained_or_updated_bn():
    state = random_backbone_state("resnet18", False, seed=0)
    model = build_classifier(state, 10)
    freeze_backbone(model)
    model.train()  # the classic mistake: BN in train mode updates its running statistics
    with torch.no_grad():
        model(torch.randn(8, 3, 8, 8))
    with pytest.raises(BackboneChangedError, match=r"bn1.running_mean"):
        check_backbone_unchanged(model, state.state_dict)
    model = build_classifier(state, 10)
    with torch.no_grad():
        model.layer4[1].conv2.weight.add_(1e-3)
    with pytest.raises(BackboneChangedError, match=r"1 backbone tensors changed .*layer4.1.conv2"):
        check_backbone_unchanged(model, state.state_dict)


def test_fast_mode_end_to_end_beats_chance_and_keeps_the_backbone():
    cfg = load_cfg(None, DIGITS_16 + ["LINCLS.MODE", "fast", "LINCLS.EPOCHS", "20",
                                      "LINCLS.STEPS", "(12, 16)"])  # fmt: skip
    result = run_lincls(random_backbone_state("resnet18", False, 0), cfg, torch.device("cpu"))
    assert result["num_train"] == 1437 and result["num_val"] == 360
    assert result["mode"] == "fast" and result["top1"] > 60.0  # chance is 10 %
