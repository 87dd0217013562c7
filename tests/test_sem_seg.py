"""Semantic segmentation transfer: the FCN head (shapes, loss with the ignore value), the training
augmentations, the evaluator on a perfect prediction, the VOC 2012 data set checks, and
``unimoco detect`` end to end on a tiny VOC2012 tree and on the shapes scenes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetMapper
from detectron2.layers import ShapeSpec
from PIL import Image
from torch.nn import functional as F

from unimoco.transfer import detect
from unimoco.transfer.config import DetectionConfigError, load_detection_cfg
from unimoco.transfer.fcn_head import FCNHead
from unimoco.transfer.sem_seg import build_sem_seg_train_mapper
from unimoco.transfer.sem_seg_data import register_sem_seg_list
from unimoco.transfer.tasks import build_evaluator

pytestmark = pytest.mark.usefixtures("one_thread")

VOC = "segmentation/voc_FCN_R_50_30k"
# A tiny run: 64 px crops, 2 images, 3 iterations, plain BN, few precise-BN batches.
TINY = [
    "MODEL.DEVICE",
    "cpu",
    "INPUT.CROP.SIZE",
    "[64, 64]",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "3",
    "SOLVER.STEPS",
    "(2,)",
    "SOLVER.WARMUP_ITERS",
    "1",
    "TEST.PRECISE_BN.NUM_ITER",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def _cfg(*overrides: str, config: str = VOC):
    return load_detection_cfg(config, ["MODEL.DEVICE", "cpu", *overrides])


def _head(cfg, channels: int = 2048, stride: int = 16) -> FCNHead:
    torch.manual_seed(0)
    return FCNHead(cfg, {"res5": ShapeSpec(channels=channels, stride=stride)})


def test_head_gives_logits_at_the_feature_stride_times_its_size():
    head = _head(_cfg("MODEL.SEM_SEG_HEAD.NORM", "BN")).eval()
    logits, losses = head({"res5": torch.randn(2, 2048, 5, 4)})
    assert logits.shape == (2, 21, 80, 64) and losses == {}
    assert len(head.convs) == 2
    assert all(conv.dilation == (6, 6) and conv.out_channels == 256 for conv in head.convs)


def test_loss_leaves_out_the_ignore_value_and_pads_the_targets():
    head = _head(_cfg("MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "2.0"))
    logits = torch.randn(2, 21, 80, 64)
    targets = torch.randint(0, 21, (2, 70, 60))  # the image: smaller than the logits
    targets[:, :10] = 255
    expected = F.cross_entropy(logits[:, :, 10:70, :60], targets[:, 10:])
    assert torch.allclose(head.losses(logits, targets), 2 * expected)
    # Only ignored pixels: zero, not NaN.
    assert head.losses(logits, torch.full((2, 70, 60), 255)).item() == 0.0
    head.train()
    none, losses = head({"res5": torch.randn(2, 2048, 5, 4)}, targets)
    assert none is None and set(losses) == {"loss_sem_seg"} and losses["loss_sem_seg"] > 0


def test_head_stride_must_match_the_feature():
    with pytest.raises(DetectionConfigError, match="COMMON_STRIDE = 16 but res5 has stride 32"):
        _head(_cfg("MODEL.SEM_SEG_HEAD.NORM", "BN"), stride=32)


def _write_pair(folder: Path, image_id: str, labels: np.ndarray, mode: str = "L") -> None:
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (folder / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    height, width = labels.shape
    rng = np.random.default_rng(len(image_id) + int(labels.sum()))
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "JPEGImages" / f"{image_id}.jpg")
    mask = Image.fromarray(labels.astype(np.uint8), mode)
    if mode == "P":
        mask.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 3 % 256, i)])
    mask.save(folder / "SegmentationClassAug" / f"{image_id}.png")


def test_train_augmentations_crop_and_pad_the_label_with_255(tmp_path):
    labels = np.zeros((30, 40), dtype=np.uint8)
    labels[10:20, 10:30] = 3
    _write_pair(tmp_path, "a", labels)
    record = {
        "file_name": str(tmp_path / "JPEGImages" / "a.jpg"),
        "sem_seg_file_name": str(tmp_path / "SegmentationClassAug" / "a.png"),
        "height": 30,
        "width": 40,
    }
    keep = _cfg("INPUT.SCALE_RANGE", "(1.0, 1.0)", "INPUT.CROP.SIZE", "[64, 48]")
    keep.INPUT.RANDOM_FLIP = "none"
    out = build_sem_seg_train_mapper(keep)(dict(record))
    assert out["image"].shape == (3, 64, 48) and out["sem_seg"].shape == (64, 48)
    assert (out["sem_seg"][:30, :40].numpy() == labels).all()
    assert (out["sem_seg"][30:] == 255).all() and (out["sem_seg"][:, 40:] == 255).all()
    double = _cfg("INPUT.SCALE_RANGE", "(2.0, 2.0)", "INPUT.CROP.SIZE", "[64, 48]")
    out = build_sem_seg_train_mapper(double)(dict(record))  # 60 x 80 -> 48 columns, 4 pad rows
    assert out["sem_seg"].shape == (64, 48) and (out["sem_seg"][60:] == 255).all()
    assert set(out["sem_seg"][:60].unique().tolist()) <= {0, 3}
    # Test time: MIN_SIZE_TEST 0 keeps the image as it is.
    test = DatasetMapper(_cfg(), is_train=False)(dict(record))
    assert test["image"].shape == (3, 30, 40)


def test_train_mapper_wants_an_absolute_crop():
    with pytest.raises(DetectionConfigError, match="TYPE 'absolute'"):
        build_sem_seg_train_mapper(_cfg("INPUT.CROP.TYPE", "relative_range"))


def test_evaluator_scores_a_perfect_prediction_100(tmp_path):
    masks = [np.zeros((8, 8), dtype=np.uint8) for _ in range(2)]
    masks[0][2:6, 2:6], masks[1][:, 4:] = 1, 2
    masks[1][0, 0] = 255
    for index, labels in enumerate(masks):
        _write_pair(tmp_path, f"im{index}", labels)
    (tmp_path / "list.txt").write_text("im0\nim1\n")
    register_sem_seg_list(
        "tiny_sem_seg",
        tmp_path / "JPEGImages",
        tmp_path / "SegmentationClassAug",
        tmp_path / "list.txt",
        ["background", "a", "b"],
    )
    cfg = _cfg("OUTPUT_DIR", str(tmp_path / "out"))
    inputs = [{"file_name": str(tmp_path / "JPEGImages" / f"im{i}.jpg")} for i in range(2)]

    def score(predicted: list[np.ndarray]) -> dict:
        evaluator = build_evaluator(cfg, "tiny_sem_seg")
        evaluator.reset()
        logits = [
            F.one_hot(torch.as_tensor(p.astype(np.int64)), 3).permute(2, 0, 1).float()
            for p in predicted
        ]
        evaluator.process(inputs, [{"sem_seg": x} for x in logits])
        return evaluator.evaluate()["sem_seg"]

    perfect = [np.where(m == 255, 0, m) for m in masks]  # the ignored pixel predicted anything
    assert score(perfect)["mIoU"] == pytest.approx(100.0)
    assert score([np.zeros((8, 8)), np.zeros((8, 8))])["mIoU"] < 50.0


def _voc_tree(root: Path, values: int = 2, mode: str = "L") -> Path:
    """VOC2012 with 4 train_aug and 2 val images of 64 x 48 px; masks hold 0..values-1 and 255."""
    voc = root / "VOC2012"
    ids = [f"2012_{i:06d}" for i in range(6)]
    for index, image_id in enumerate(ids):
        labels = np.zeros((48, 64), dtype=np.uint8)
        labels[8:40, 8 + index : 40 + index] = index % values
        labels[8, :] = 255
        _write_pair(voc, image_id, labels, mode)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in ids[:4]))
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in ids[:2]))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in ids[4:]))
    return voc


@pytest.fixture(scope="module")
def r50_pkl(converted_resnet) -> Path:
    return converted_resnet("resnet50")


def test_voc_end_to_end_writes_the_miou_headline(tmp_path, r50_pkl):
    _voc_tree(tmp_path / "data", values=21)
    out = tmp_path / "out"
    argv = ["--config-file", VOC, *TINY, "MODEL.WEIGHTS", str(r50_pkl)]
    argv += ["DATASETS.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(out)]
    assert detect.main(argv) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    headline = final["headline"]["voc_2012_sem_seg_val"]
    assert headline["task"] == "semantic segmentation" and headline["metric"] == "mIoU"
    assert 0.0 <= headline["value"] <= 100.0
    results = final["results"]["voc_2012_sem_seg_val"]["sem_seg"]
    assert set(results) >= {"mIoU", "fwIoU", "pACC", "IoU-background", "IoU-aeroplane"}
    log = (out / "log.txt").read_text()
    assert "MODEL.SEM_SEG_HEAD.NORM = BN" in log and "Running precise-BN" in log


def test_shapes_end_to_end(tmp_path):
    out = tmp_path / "out"
    argv = ["--config-file", "segmentation/shapes_FCN_R_18", *TINY, "INPUT.CROP.SIZE", "[32, 32]"]
    argv += ["DATASETS.SHAPES.NUM_TRAIN", "4", "DATASETS.SHAPES.NUM_TEST", "2"]
    argv += ["DATASETS.SHAPES.IMAGE_SIZE", "32", "DATASETS.SHAPES.ROOT", str(tmp_path / "cache")]
    assert detect.main([*argv, "OUTPUT_DIR", str(out)]) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    results = final["results"]["shapes_sem_seg_test"]["sem_seg"]
    assert 0.0 <= final["headline"]["shapes_sem_seg_test"]["value"] <= 100.0
    assert "IoU-background" in results and "IoU-circle" in results
    labels = sorted((tmp_path / "cache").rglob("SegmentationClass/*.png"))
    assert len(labels) == 6
    values = np.unique(np.concatenate([np.asarray(Image.open(p)).ravel() for p in labels]))
    assert values[0] == 0 and values.max() <= 10 and len(values) > 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("palette", r"2012_000000.png is a 'P'-mode image; .*unimoco prepare-voc-seg"),
        ("value 37", r"2012_000000.png holds label value\(s\) 37; expected class ids 0-20 and 255"),
        ("no labels", r"VOC2012/SegmentationClassAug does not exist; set DATASETS.ROOT .*VOC2012/"),
        ("classes", r"has 21 classes but MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5"),
        ("empty list", r"ImageSets/Segmentation/val.txt lists no image"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, damage, message):
    voc = _voc_tree(tmp_path / "data", mode="P" if damage == "palette" else "L")
    overrides = []
    if damage == "value 37":
        labels = np.full((48, 64), 37, dtype=np.uint8)
        Image.fromarray(labels, "L").save(voc / "SegmentationClassAug" / "2012_000000.png")
    elif damage == "no labels":
        (voc / "SegmentationClassAug").rename(voc / "elsewhere")
    elif damage == "empty list":
        (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    elif damage == "classes":
        overrides = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"]
    argv = ["--config-file", VOC, *TINY, "DATASETS.ROOT", str(tmp_path / "data"), *overrides]
    assert detect.main([*argv, "OUTPUT_DIR", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "unimoco detect" in line]
    assert len(err) == 1 and re.search(message, err[0]), err
