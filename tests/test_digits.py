"""scikit-learn's UCI digits as a built-in dataset: the split, the images, the config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from unimoco.cli import main as cli_main
from unimoco.pretrain.backbone import load_backbone_state
from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.data.datasets import build_dataset
from unimoco.pretrain.data.digits import DIGIT_CLASSES, DigitsDataset, digits_split
from unimoco.pretrain.data.label_subset import apply_label_subset
from unimoco.pretrain.eval.features import build_backbone
from unimoco.pretrain.eval.knn import knn_evaluate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "digits_r18.yaml"
CPU = torch.device("cpu")
MARGIN = 5.0  # kNN top-1 points gained from epoch 5 to 30 (7-16 measured over three seeds)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def test_split_is_fixed_stratified_and_disjoint():
    train, test = digits_split(360, seed=0)
    assert (len(train), len(test)) == (1437, 360)
    assert not set(train) & set(test) and sorted({*train, *test}) == list(range(1797))
    again, _ = digits_split(360, seed=0)
    other, _ = digits_split(360, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    test_counts = np.bincount(DigitsDataset("val").targets, minlength=10)
    assert test_counts.min() >= 34 and test_counts.max() <= 37  # 36 of each, give or take


def test_images_are_upsampled_rgb_and_keep_their_digit():
    dataset = DigitsDataset("train", size=32)
    image, label = dataset[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert dataset.classes == list(DIGIT_CLASSES) and label == dataset.targets[0]
    pixels = np.asarray(image)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey
    assert pixels.max() > 200 and pixels.min() < 30  # 0..16 stretched to 0..255
    native = DigitsDataset("train", size=8)
    # The ids name the index in scikit-learn's array: the first image is that one, stretched.
    index = int(native.sample_ids[0])
    expected = np.round(load_digits().images[index] * 255 / 16).astype(np.uint8)
    assert np.array_equal(np.asarray(native[0][0])[..., 0], expected)
    assert native.targets[0] == load_digits().target[index]


def test_config_builds_both_splits_and_label_subsets_apply():
    cfg = load_cfg(str(CONFIG), ["DATA.LABEL_RATIO", "0.1"])
    train = build_dataset(cfg, "train")
    val = build_dataset(cfg, "val")
    assert (len(train), len(val)) == (1437, 360) and train.classes == val.classes
    targets, mask = apply_label_subset(
        train.targets, train.sample_ids, cfg.DATA.LABEL_RATIO, "", cfg.SEED, None
    )
    assert mask.sum() == 145 and targets.count(-1) == 1437 - 145


@pytest.mark.parametrize(
    ("key", "value"),
    [("DATA.DIGITS.SIZE", "4"), ("DATA.DIGITS.NUM_TEST", "5"), ("DATA.DIGITS.NUM_TEST", "1790")],
)
def test_bad_digits_options_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"{key} = {value}; expected .*(>= 8|\[10, 1787\])"):
        load_cfg(None, ["DATA.NAME", "digits", key, value])


@pytest.mark.slow
@pytest.mark.timeout(2400)  # about 3.5 min on 2 free cores; much longer on shared ones
def test_moco_pretraining_on_digits_learns(tmp_path):
    """The digits recipe learns: the online kNN monitor rises by more than 5 points from epoch 5
    to the end (65-74 % -> 81-90 % over three seeds measured), and the offline kNN of the final
    checkpoint equals the monitor's last value. Beating the random-init encoder (78-81 %) is in
    docs/benchmarks.md, not here: seeds 1 and 2 beat it by only 0-3 points."""
    out = tmp_path / "moco"
    opts = ["OUTPUT_DIR", str(out), "LOSS.NAME", "infonce", "DATA.NUM_WORKERS", "0"]
    quiet = ["LOG.PROGRESS", "off", "LOG.TENSORBOARD", "False"]
    assert cli_main(["pretrain", "--config-file", str(CONFIG), *quiet, *opts]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    monitored = [row for row in rows if "knn_top1" in row]
    steps_per_epoch = 1437 // 64
    assert [row["step"] for row in monitored] == [e * steps_per_epoch for e in range(5, 31, 5)]
    assert monitored[-1]["knn_top1"] > monitored[0]["knn_top1"] + MARGIN, monitored
    assert "kNN top-1" in (out / "log.txt").read_text()

    cfg = load_cfg(str(CONFIG), ["DATA.NUM_WORKERS", "0"])
    offline = knn_evaluate(
        build_backbone(load_backbone_state(out / "checkpoint_final.pth")), cfg, CPU
    )
    assert offline["top1"] == pytest.approx(monitored[-1]["knn_top1"])
