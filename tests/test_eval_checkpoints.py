"""The evaluation commands on every checkpoint format, their outputs, and clear errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from unimoco.cli import main as cli_main
from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.eval.data import check_same_classes
from unimoco.pretrain.eval.features import EvalError, build_backbone, resolve_backbone
from unimoco.pretrain.model.unimoco import UniMoCo

DIGITS_8 = [
    "DATA.NAME", "digits", "DATA.DIGITS.SIZE", "8", "INPUT.SIZE", "8",
    "MODEL.ARCH", "resnet18", "DATA.NUM_WORKERS", "0", "LOG.PROGRESS", "off",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """One trained-looking UniMoCo R18 saved as ours, official MoCo and torchvision weights."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    model = UniMoCo("resnet18", dim=16, queue_size=32, bn_splits=1)
    with torch.no_grad():  # non-default BN statistics, so that they are compared too
        model.encoder_q(torch.randn(8, 3, 16, 16))
    state = model.state_dict()
    encoder = {k[len("encoder_q.") :]: v for k, v in state.items() if k.startswith("encoder_q.")}
    objects = {
        "unimoco": {"model": state, "step": 10, "arch": "resnet18"},
        "moco": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 200},
        "torchvision": {k: v for k, v in encoder.items() if not k.startswith("fc.")},
    }
    paths = {}
    for name, obj in objects.items():
        paths[name] = folder / f"{name}.pth"
        torch.save(obj, paths[name])
    return paths


def test_every_format_gives_the_same_backbone(checkpoints):
    cfg = load_cfg(None, ["MODEL.ARCH", "resnet18"])
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = {}
    for name, path in checkpoints.items():
        state = resolve_backbone(str(path), cfg)
        assert state.source_format == name
        backbone = build_backbone(state).eval()
        with torch.no_grad():
            loaded[name] = (backbone.state_dict(), backbone(images))
    reference_weights, reference_features = loaded["unimoco"]
    assert reference_features.shape == (4, 512)
    for weights, features in loaded.values():
        assert weights.keys() == reference_weights.keys()
        assert all(torch.equal(weights[k], reference_weights[k]) for k in weights)
        assert torch.equal(features, reference_features)


def test_knn_command_agrees_across_formats_and_writes_its_outputs(checkpoints, tmp_path):
    results = {}
    for name in ("moco", "torchvision"):
        out = tmp_path / name
        args = ["knn", "--checkpoint", str(checkpoints[name]), *DIGITS_8, "OUTPUT_DIR", str(out)]
        assert cli_main(args) == 0
        results[name] = json.loads((out / "knn_metrics.json").read_text())
        assert results[name]["source_format"] == name
        assert "knn: top-1" in (out / "log.txt").read_text()
        assert (out / "knn_config.yaml").is_file()
    assert results["moco"]["top1"] == results["torchvision"]["top1"]
    assert 10.0 < results["moco"]["top1"] <= 100.0  # chance is 10 %
    assert results["moco"]["num_train"] == 1437 and results["moco"]["num_val"] == 360


def test_lincls_and_semisup_commands_write_metrics(checkpoints, tmp_path):
    common = [*DIGITS_8, "OUTPUT_DIR", str(tmp_path)]
    lincls = ["LINCLS.MODE", "fast", "LINCLS.EPOCHS", "2"]
    assert cli_main(["lincls", "--random-init", *common, *lincls]) == 0
    semisup = ["SEMISUP.EPOCHS", "1", "SEMISUP.LABEL_RATIO", "0.01", "SEMISUP.BATCH_SIZE", "10"]
    assert (
        cli_main(["semisup", "--checkpoint", str(checkpoints["unimoco"]), *common, *semisup]) == 0
    )
    linear = json.loads((tmp_path / "lincls_metrics.json").read_text())
    finetuned = json.loads((tmp_path / "semisup_metrics.json").read_text())
    assert (linear["checkpoint"], linear["source_format"]) == ("random init", "random")
    assert linear["mode"] == "fast" and linear["epochs"] == 2 and 0.0 <= linear["top1"] <= 100.0
    assert linear["top5"] >= linear["top1"]
    assert finetuned["source_format"] == "unimoco" and finetuned["num_labeled"] == 10
    assert finetuned["top5"] >= finetuned["top1"]
    assert len((tmp_path / "semisup_labeled_subset.txt").read_text().split()) == 10
    log = (tmp_path / "log.txt").read_text()
    assert "lincls: top-1" in log and "semisup: top-1" in log


def test_a_checkpoint_without_a_resnet_is_refused(tmp_path):
    path = tmp_path / "not_a_resnet.pth"
    torch.save({"state_dict": {"linear.weight": torch.zeros(2, 2)}}, path)
    args = ["knn", "--checkpoint", str(path), *DIGITS_8, "OUTPUT_DIR", str(tmp_path)]
    assert cli_main(args) == 2
    log = (tmp_path / "log.txt").read_text()
    assert f"{path}: no ResNet backbone found" in log and "linear.weight" not in log.split(":")[0]
    assert not (tmp_path / "knn_metrics.json").exists()


def test_an_architecture_other_than_the_configs_is_refused(checkpoints, tmp_path):
    args = ["lincls", "--checkpoint", str(checkpoints["torchvision"]), *DIGITS_8,
            "MODEL.ARCH", "resnet50", "OUTPUT_DIR", str(tmp_path)]  # fmt: skip
    assert cli_main(args) == 2
    log = (tmp_path / "log.txt").read_text()
    assert "holds a resnet18 (CIFAR stem: False) but the config has MODEL.ARCH = resnet50" in log


def _image_folder(root, classes):
    for name in classes:
        (root / name).mkdir(parents=True)
        pixels = np.full((8, 8, 3), 40 * len(name), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name / "0.png")


def test_a_class_count_mismatch_is_refused(checkpoints, tmp_path):
    _image_folder(tmp_path / "train", ["cat", "dog", "fox"])
    _image_folder(tmp_path / "val", ["cat", "dog"])
    roots = ["DATA.ROOT", str(tmp_path / "train"), "DATA.VAL_ROOT", str(tmp_path / "val")]
    args = ["knn", "--checkpoint", str(checkpoints["unimoco"]), *DIGITS_8,
            "DATA.NAME", "imagefolder", *roots, "OUTPUT_DIR", str(tmp_path / "out")]  # fmt: skip
    assert cli_main(args) == 2
    assert (
        "different class folders (only in val: -; only in train: fox)"
        in (tmp_path / "out" / "log.txt").read_text()
    )
    # Datasets of other kinds reach the evaluation's own check.
    train = SimpleNamespace(classes=["a", "b", "c"], targets=[0, 1, 2])
    with pytest.raises(EvalError, match="training split has 3 classes .* held-out split 2"):
        check_same_classes(train, SimpleNamespace(classes=["a", "b"], targets=[0, 1]), "x")
    with pytest.raises(EvalError, match=r"held-out split has label 3 but only 3 classes"):
        check_same_classes(train, SimpleNamespace(classes=["a", "b", "c"], targets=[3]), "x")
