"""Semi-supervised fine-tuning: subset sizes per class, the user's list, lrs, a moving backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.data.label_subset import LabeledListError
from unimoco.pretrain.eval.data import build_eval_splits, classifier_train_transform
from unimoco.pretrain.eval.features import build_classifier, random_backbone_state
from unimoco.pretrain.eval.semisup import build_optimizer, finetune, finetune_subset, lr_factor

DIGITS_8 = [
    "DATA.NAME", "digits", "DATA.DIGITS.SIZE", "8", "INPUT.SIZE", "8",
    "MODEL.ARCH", "resnet18", "DATA.NUM_WORKERS", "0",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _train_split(opts=()):
    cfg = load_cfg(None, DIGITS_8 + list(opts))
    train, _, _ = build_eval_splits(cfg)
    return cfg, train


@pytest.mark.parametrize("ratio", [0.01, 0.1])
def test_subset_is_class_balanced_and_seeded(ratio):
    cfg, train = _train_split(["SEMISUP.LABEL_RATIO", str(ratio)])
    subset = finetune_subset(train, cfg)
    targets = np.asarray(train.targets)
    per_class = np.bincount(targets, minlength=10)
    expected = [max(1, math.floor(ratio * n + 0.5)) for n in per_class]
    assert np.bincount(targets[subset], minlength=10).tolist() == expected
    if ratio == 0.01:
        assert expected == [1] * 10  # 1 % of ~144 images per class
    else:
        assert sum(expected) == 145
    assert np.array_equal(finetune_subset(train, cfg), subset)
    other, _ = _train_split(["SEMISUP.LABEL_RATIO", str(ratio), "SEED", "1"])
    assert not np.array_equal(finetune_subset(train, other), subset)


def test_the_users_list_replaces_the_ratio(tmp_path):
    _, train = _train_split()
    listing = tmp_path / "labeled.txt"
    chosen = [train.sample_ids[i] for i in (3, 50, 700)]
    listing.write_text("# three images\n" + "\n".join(chosen) + "\n")
    cfg, _ = _train_split(["SEMISUP.LABELED_LIST", str(listing)])
    assert finetune_subset(train, cfg).tolist() == [3, 50, 700]
    listing.write_text("9999\n")
    with pytest.raises(LabeledListError, match="1 entries not in the dataset.*9999"):
        finetune_subset(train, cfg)


def test_zero_ratio_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"SEMISUP.LABEL_RATIO = 0.0; expected a value in \(0, 1\]"
    ):
        load_cfg(None, ["SEMISUP.LABEL_RATIO", "0.0"])


def test_separate_lrs_and_schedules():
    cfg = load_cfg(None, ["SEMISUP.BATCH_SIZE", "128", "SEMISUP.BACKBONE_LR", "0.02",
                          "SEMISUP.HEAD_LR", "0.4", "SEMISUP.EPOCHS", "10"])  # fmt: skip
    model = build_classifier(random_backbone_state("resnet18", False, 0), 10)
    backbone, head = build_optimizer(model, cfg).param_groups
    assert (backbone["base_lr"], head["base_lr"]) == pytest.approx((0.01, 0.2))  # x 128 / 256
    assert len(head["params"]) == 2 and len(backbone["params"]) == len(list(model.parameters())) - 2
    assert [lr_factor(e, cfg) for e in (0, 5)] == pytest.approx([1.0, 0.5])
    step = load_cfg(None, ["SEMISUP.SCHEDULE", "step", "SEMISUP.STEPS", "(3, 6)"])
    assert [lr_factor(e, step) for e in (2, 3, 6)] == pytest.approx([1.0, 0.1, 0.01])


def test_finetuning_moves_the_backbone_unlike_the_linear_protocol():
    cfg = load_cfg(None, DIGITS_8 + ["SEMISUP.EPOCHS", "1", "SEMISUP.BATCH_SIZE", "32"])
    train, _, _ = build_eval_splits(cfg, classifier_train_transform(8, (0.08, 1.0)))
    state = random_backbone_state("resnet18", False, 0)
    model = build_classifier(state, 10)
    finetune(model, Subset(train, list(range(64))), cfg, torch.device("cpu"))
    after = model.state_dict()
    moved = [k for k, v in state.state_dict.items() if not torch.equal(v, after[k])]
    assert "conv1.weight" in moved and "layer4.1.conv2.weight" in moved
    assert "bn1.running_mean" in moved  # BN trains in fine-tuning
    assert model.training
