"""VOC07 classification with linear SVMs on frozen features: the AP and the per-class SVM sweep
against independent computations, and unimoco detect end to end on a tiny VOC2007 tree written
in the real layout (JPEGImages, ImageSets/Main/<class>_<split>.txt with 1 / -1 / 0 labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data.datasets.pascal_voc import CLASS_NAMES
from PIL import Image, ImageDraw
from sklearn.metrics import average_precision_score
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC
from torchvision import transforms

from unimoco.pretrain.model.resnet import build_resnet
from unimoco.transfer import convert, detect
from unimoco.transfer.config import load_detection_cfg
from unimoco.transfer.frozen_features import build_frozen_backbone, extract_features
from unimoco.transfer.voc07_svm import SVM_SETTINGS, fit_class, svm_results, voc_ap

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = "classification/voc07_svm_R_50"
# 40 trainval images (each class present in 4), 20 test images (each class present in 2).
NUM_TRAIN, NUM_TEST, SIZE = 40, 20, 64
# (split, image index, class index): difficult-only labels written as 0 in the class lists.
DIFFICULT = {("trainval", 0, 5), ("trainval", 3, 12), ("test", 1, 0), ("test", 9, 17)}


def _classes_of(split: str, index: int) -> set[int]:
    step = 1 if split == "trainval" else 3
    return {index % 20, (index + step) % 20}


def _hand_ap(present: list[bool], scores: list[float]) -> float:
    """VOC all-point AP by the definition: walk down the ranking, precision at each positive,
    each raised to the best precision at any later positive, averaged over the positives."""
    ranked = [p for _, p in sorted(zip(scores, present), key=lambda t: -t[0])]
    hits, precisions = 0, []
    for rank, positive in enumerate(ranked, start=1):
        if positive:
            hits += 1
            precisions.append(hits / rank)
    envelope = [max(precisions[i:]) for i in range(len(precisions))]
    return sum(envelope) / sum(present)


def write_voc07_cls(root: Path) -> Path:
    """``root/VOC2007``: 64 px JPEGs with one filled disc per present class (class i has its own
    colour and place) and the per-class lists of both splits."""
    voc = root / "VOC2007"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(20, 3))
    for split, count in (("trainval", NUM_TRAIN), ("test", NUM_TEST)):
        ids = [f"{split[:2]}{i:04d}" for i in range(count)]
        for i, image_id in enumerate(ids):
            image = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
            draw = ImageDraw.Draw(image)
            for c in _classes_of(split, i):
                x, y = 4 + (c % 5) * 12, 4 + (c // 5) * 14
                draw.ellipse([x, y, x + 10, y + 10], fill=tuple(int(v) for v in colours[c]))
            image.save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        for c, name in enumerate(CLASS_NAMES):
            lines = []
            for i, image_id in enumerate(ids):
                label = 1 if c in _classes_of(split, i) else -1
                label = 0 if (split, i, c) in DIFFICULT else label
                lines.append(f"{image_id} {label:2d}")
            (voc / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("\n".join(lines) + "\n")
    return voc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, converted_resnet) -> Path:
    """The tiny VOC2007 tree and converted random R50 and R18 backbones."""
    root = tmp_path_factory.mktemp("voc07_svm")
    write_voc07_cls(root / "data")
    for arch in ("resnet50", "resnet18"):
        (root / f"{arch}.pkl").symlink_to(converted_resnet(arch))
    return root


def _argv(workdir: Path, out: str, *extra: str) -> list[str]:
    return [
        "--config-file",
        CONFIG,
        "MODEL.WEIGHTS",
        str(workdir / "resnet50.pkl"),
        "MODEL.DEVICE",
        "cpu",
        "DATASETS.ROOT",
        str(workdir / "data"),
        "DATALOADER.NUM_WORKERS",
        "0",
        "SVM.RESIZE",
        "64",
        "SVM.IMAGE_SIZE",
        "64",
        "SVM.COSTS",
        "[0.01, 1.0, 100.0]",
        "OUTPUT_DIR",
        str(workdir / out),
        *extra,
    ]


def test_voc_ap_is_the_area_under_the_precision_envelope():
    assert voc_ap(np.array([True, False, True]), np.array([3.0, 1.0, 2.0])) == 1.0
    # Ranking N, P, P: precisions 1/2 and 2/3; the envelope lifts the first to 2/3.
    present, scores = np.array([False, True, True]), np.array([3.0, 2.0, 1.0])
    assert voc_ap(present, scores) == pytest.approx(2 / 3)
    assert average_precision_score(present, scores) == pytest.approx((1 / 2 + 2 / 3) / 2)
    rng = np.random.default_rng(1)
    for _ in range(20):
        present = rng.random(30) < 0.3
        present[0] = True
        scores = rng.normal(size=30)
        assert voc_ap(present, scores) == pytest.approx(_hand_ap(list(present), list(scores)))


def _features(labels: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """One axis per class, set where the class is present or difficult, plus noise."""
    x = (labels != -1).astype(float) + noise * rng.normal(size=labels.shape)
    return np.hstack([x, noise * rng.normal(size=(len(labels), 4))])


def _labels(rng: np.random.Generator, images: int, classes: int) -> np.ndarray:
    labels = np.where(rng.random((images, classes)) < 0.3, 1, -1)
    labels[:3], labels[3:6] = 1, -1  # every class has positives and negatives in each fold
    return labels


def test_separable_features_give_map_100_and_difficult_test_images_are_ignored():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    train_y, test_y = _labels(rng, 60, 3), _labels(rng, 30, 3)
    train_x, test_x = _features(train_y, rng, 0.05), _features(test_y, rng, 0.05)
    # Difficult test images of class a: one that looks like a (scored high, would be a false
    # positive as a negative) and one that does not (would be a missed positive as a positive).
    test_x[6], test_x[7] = test_x[0], test_x[3]
    test_y[6], test_y[7] = test_y[0], test_y[3]
    test_y[6, 0] = test_y[7, 0] = 0
    results = svm_results(names, train_x, train_y, test_x, test_y, [0.1, 1.0], 3)
    assert results["mAP"] == pytest.approx(100.0)
    assert all(results[f"AP-{n}"] == pytest.approx(100.0) for n in names)
    assert set(results) == {"mAP"} | {f"{k}-{n}" for k in ("AP", "C") for n in names}
    # Counted either way, the difficult images would cost class a its perfect AP.
    svm = LinearSVC(C=results["C-a"], **SVM_SETTINGS).fit(
        train_x, np.where(train_y[:, 0] == 1, 1, -1)
    )
    scores = svm.decision_function(test_x)
    assert voc_ap(test_y[:, 0] == 1, scores) < 1.0
    assert voc_ap(test_y[:, 0] != -1, scores) < 1.0


def test_the_chosen_cost_is_the_cross_validated_best_and_difficult_trains_as_negative():
    rng = np.random.default_rng(2)
    train_y, test_y = _labels(rng, 90, 1)[:, 0], _labels(rng, 40, 1)[:, 0]
    train_y[10:20] = 0
    test_y[5:8] = 0
    train_x, test_x = _features(train_y[:, None], rng, 0.8), _features(test_y[:, None], rng, 0.8)
    costs = [1e-4, 1e-2, 1.0, 100.0]
    result = fit_class(train_x, train_y, test_x, test_y, costs, 3)

    target = np.where(train_y == 1, 1, -1)
    cv_ap = [
        cross_val_score(
            LinearSVC(C=c, **SVM_SETTINGS), train_x, target, cv=3, scoring="average_precision"
        ).mean()
        for c in costs
    ]
    assert len({round(ap, 6) for ap in cv_ap}) > 1  # the sweep has something to choose
    assert result.cv_ap == pytest.approx(cv_ap)
    assert result.cost == costs[int(np.argmax(cv_ap))]
    svm = LinearSVC(C=result.cost, **SVM_SETTINGS).fit(train_x, target)
    kept = test_y != 0
    expected = _hand_ap(list(test_y[kept] == 1), list(svm.decision_function(test_x[kept])))
    assert result.test_ap == pytest.approx(expected)


def test_features_are_torchvisions_pooled_res5_of_the_centre_crop(tmp_path):
    """The converted weights through detectron2's ResNet give the features of the torchvision
    network they came from (BN running statistics included) on the documented crop."""
    torch.manual_seed(0)
    net = build_resnet("resnet18").eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    assert convert.main([str(tmp_path / "r18.pth"), str(tmp_path / "r18.pkl")]) == 0
    rng = np.random.default_rng(0)
    files = []
    for i, (w, h) in enumerate([(96, 80), (72, 100), (64, 64)]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[-1])
    cfg = load_detection_cfg(
        CONFIG,
        ["MODEL.WEIGHTS", str(tmp_path / "r18.pkl"), "MODEL.DEVICE", "cpu"]
        + ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
        + ["SVM.RESIZE", "64", "SVM.IMAGE_SIZE", "56", "SVM.BATCH_SIZE", "2"]
        + ["DATALOADER.NUM_WORKERS", "0"],
    )
    features = extract_features(
        cfg, build_frozen_backbone(cfg), [{"file_name": str(f)} for f in files]
    )

    crop = transforms.Compose(
        [
            transforms.Resize(64),
            transforms.CenterCrop(56),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    batch = torch.stack([crop(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        pooled = torch.nn.Sequential(*list(net.children())[:-1])(batch).flatten(1)
    expected = torch.nn.functional.normalize(pooled, dim=1).numpy()
    assert features.shape == (3, 512)
    assert np.linalg.norm(features, axis=1) == pytest.approx(1.0)
    # PIL resizes to uint8, the extraction in float: equal up to that rounding.
    assert np.abs(features - expected).max() < 3e-3
    assert np.sum(features * expected, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_detect_runs_the_svm_protocol_end_to_end(workdir):
    assert detect.main(_argv(workdir, "r50")) == 0
    final = json.loads((workdir / "r50" / "final_metrics.json").read_text())
    metrics = final["results"]["voc_2007_cls_test"]["classification"]
    assert 0.0 <= metrics["mAP"] <= 100.0
    aps = [metrics[f"AP-{name}"] for name in CLASS_NAMES]
    assert all(0.0 <= ap <= 100.0 for ap in aps)
    assert metrics["mAP"] == pytest.approx(np.mean(aps))
    assert all(metrics[f"C-{name}"] in (0.01, 1.0, 100.0) for name in CLASS_NAMES)
    assert final["headline"]["voc_2007_cls_test"] == {
        "task": "classification (linear SVMs)",
        "group": "classification",
        "metric": "mAP",
        "value": metrics["mAP"],
    }
    log = (workdir / "r50" / "log.txt").read_text()
    assert "Extracting res5 features of 40 voc_2007_cls_trainval and 20 voc_2007_cls_test" in log
    assert "Training 20 SVMs on 2048-d features" in log

    # R18 through the same config: 512-d res5 features.
    r18 = ("MODEL.WEIGHTS", str(workdir / "resnet18.pkl"), "MODEL.RESNETS.DEPTH", "18")
    argv = _argv(workdir, "r18", *r18, "MODEL.RESNETS.RES2_OUT_CHANNELS", "64")
    assert detect.main(argv) == 0
    assert "Training 20 SVMs on 512-d features" in (workdir / "r18" / "log.txt").read_text()


def test_bad_input_is_one_clear_line(workdir, tmp_path, capsys):
    def fails(argv: list[str], message: str) -> None:
        assert detect.main(argv) == 2
        assert message in capsys.readouterr().err

    fails(_argv(workdir, "o", "SVM.NUM_CLASSES", "10"), "has 20 classes but SVM.NUM_CLASSES = 10")
    fails(_argv(workdir, "o", "SVM.COSTS", "[0.0, 1.0]"), "SVM.COSTS = [0.0, 1.0]; expected")
    fails(["--eval-only", *_argv(workdir, "o")], "--eval-only does not apply with SVM.ENABLED")
    fails(_argv(workdir, "o", "SVM.IMAGE_SIZE", "65"), "SVM.IMAGE_SIZE = 65 is larger than")
    r18 = str(workdir / "resnet18.pkl")
    fails(_argv(workdir, "o", "MODEL.WEIGHTS", r18), f"MODEL.WEIGHTS {r18}: no weights for")
    fails(
        _argv(workdir, "o", "SVM.ENABLED", "False"),
        "'voc_2007_cls_trainval' is scored by the linear-SVM protocol",
    )

    data = tmp_path / "data"
    voc = write_voc07_cls(data)
    main = voc / "ImageSets" / "Main"
    (main / "dog_test.txt").unlink()
    fails(
        _argv(workdir, "o", "DATASETS.ROOT", str(data)), f"{main / 'dog_test.txt'} does not exist"
    )
    lines = (main / "cat_trainval.txt").read_text().splitlines()
    lines[2] = lines[2][:-2] + " 2"
    (main / "cat_trainval.txt").write_text("\n".join(lines) + "\n")
    (main / "dog_test.txt").write_text((main / "cat_test.txt").read_text())
    fails(
        _argv(workdir, "o", "DATASETS.ROOT", str(data)),
        f"{main / 'cat_trainval.txt'}, line 3: label '2' of image 'tr0002'; expected 1 (present)",
    )
