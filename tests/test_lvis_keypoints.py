"""LVIS v0.5 instance segmentation and COCO person keypoints: the data sets in detectron2's layout
under DATASETS.ROOT (tiny jsons in the real formats, 64-px JPEGs), the evaluators scoring ground
truth at the maximum, the built-in configs end to end, and the errors for missing files and a
missing ``lvis`` package."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_PERSON_KEYPOINT_NAMES
from detectron2.data.datasets.lvis_v0_5_categories import LVIS_CATEGORIES
from detectron2.structures import Boxes, BoxMode, Instances, polygons_to_bitmask
from PIL import Image

from unimoco.transfer import detect
from unimoco.transfer.config import load_detection_cfg
from unimoco.transfer.datasets import register_datasets
from unimoco.transfer.tasks import build_evaluator, headline

pytestmark = pytest.mark.usefixtures("one_thread")

LVIS_CONFIG = "detection/lvis_v0.5_mask_rcnn_R_50_FPN_1x"
KEYPOINT_CONFIG = "detection/coco_keypoint_rcnn_R_50_FPN_2x"
SIZE = 64
# (category id, frequency) of the LVIS classes drawn: one rare, one common, one frequent.
LVIS_DRAWN = [(1, "r"), (2, "c"), (3, "f")]
# R18-FPN at 64 px, a few iterations, small heads: the pipeline, not the accuracy, is under test.
TINY = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "(64, 64)",
    "MODEL.ANCHOR_GENERATOR.SIZES", "[[8], [16], [32], [64], [128]]",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "TEST.DETECTIONS_PER_IMAGE", "20",
    "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", str(SIZE),
    "INPUT.MIN_SIZE_TEST", str(SIZE), "INPUT.MAX_SIZE_TEST", str(SIZE),
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)",
    "SOLVER.WARMUP_ITERS", "1", "TEST.PRECISE_BN.NUM_ITER", "2",
    "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
]  # fmt: skip


def _box(index: int) -> list[float]:
    """An XYWH box inside the 64-px image, different per object."""
    x, y = 4 + 10 * (index % 3), 6 + 8 * (index % 2)
    return [float(x), float(y), 26.0, 30.0]


def _polygon(box: list[float]) -> list[float]:
    """A hexagon filling ``box`` (touching all four sides, so its bbox is ``box``)."""
    x, y, w, h = box
    return [x, y + h / 2, x + w / 3, y, x + 2 * w / 3, y, x + w, y + h / 2,
            x + 2 * w / 3, y + h, x + w / 3, y + h]  # fmt: skip


def _person_keypoints(box: list[float]) -> list[float]:
    """17 (x, y, v) triples inside ``box``: the last two unlabelled (v 0), the rest visible."""
    x, y, w, h = box
    values = []
    for k in range(17):
        if k >= 15:
            values += [0.0, 0.0, 0]
        else:
            values += [x + 2 + (k % 5) * (w - 4) / 4, y + 2 + (k // 5) * (h - 4) / 3, 2]
    return values


def _write_image(path: Path, boxes: list[list[float]]) -> None:
    """A 64-px JPEG with a bright rectangle per object on a dark background."""
    pixels = np.full((SIZE, SIZE, 3), 20, np.uint8)
    for i, (x, y, w, h) in enumerate(boxes):
        pixels[int(y) : int(y + h), int(x) : int(x + w)] = (200, 60 + 60 * i, 90)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def _image_entry(image_id: int, folder: str) -> dict:
    file_name = f"{image_id:012d}.jpg"
    return {
        "id": image_id,
        "file_name": file_name,
        "coco_url": f"http://images.cocodataset.org/{folder}/{file_name}",
        "height": SIZE,
        "width": SIZE,
        "license": 1,
        "flickr_url": f"http://farm1.staticflickr.com/{file_name}",
        "date_captured": "2013-11-14 16:28:13",
    }


def _write_lvis(root: Path, split: str, image_ids: list[int]) -> None:
    """``root/lvis/lvis_v0.5_<split>.json`` in LVIS v0.5's format (the real 1230 categories
    with their counts) and its images under ``root/coco/<split>2017``."""
    images, annotations = [], []
    for image_id in image_ids:
        drawn = LVIS_DRAWN[: 1 + image_id % 2] if split == "train" else LVIS_DRAWN[image_id % 3 :]
        boxes = [_box(i) for i in range(len(drawn))]
        for box, (category_id, _) in zip(boxes, drawn):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                 "segmentation": [_polygon(box)], "bbox": box, "area": box[2] * box[3] * 2 / 3}
            )  # fmt: skip
        entry = _image_entry(image_id, f"{split}2017")
        entry["not_exhaustive_category_ids"] = [drawn[0][0]] if image_id % 2 else []
        entry["neg_category_ids"] = [5, 6]
        images.append(entry)
        _write_image(root / "coco" / f"{split}2017" / entry["file_name"], boxes)
    categories = []
    for category in LVIS_CATEGORIES:
        counted = [a for a in annotations if a["category_id"] == category["id"]]
        categories.append(
            {**category, "image_count": len({a["image_id"] for a in counted}),
             "instance_count": len(counted)}
        )  # fmt: skip
    data = {"info": {"version": "0.5"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}  # fmt: skip
    path = root / "lvis" / f"lvis_v0.5_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _write_keypoints(root: Path, split: str, image_ids: list[int]) -> None:
    """``root/coco/annotations/person_keypoints_<split>2017.json`` in COCO's format (17 keypoints
    per person, num_keypoints, visibility flags) and its images under ``root/coco/<split>2017``."""
    images, annotations = [], []
    for image_id in image_ids:
        boxes = [_box(i) for i in range(1 + image_id % 2)]
        for box in boxes:
            keypoints = _person_keypoints(box)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                 "iscrowd": 0, "bbox": box, "area": box[2] * box[3] * 2 / 3,
                 "segmentation": [_polygon(box)], "keypoints": keypoints,
                 "num_keypoints": sum(v > 0 for v in keypoints[2::3])}
            )  # fmt: skip
        entry = _image_entry(image_id, f"{split}2017")
        images.append(entry)
        _write_image(root / "coco" / f"{split}2017" / entry["file_name"], boxes)
    skeleton = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7]]
    category = {"supercategory": "person", "id": 1, "name": "person",
                "keypoints": list(COCO_PERSON_KEYPOINT_NAMES), "skeleton": skeleton}  # fmt: skip
    data = {"info": {}, "licenses": [], "images": images, "annotations": annotations,
            "categories": [category]}  # fmt: skip
    path = root / "coco" / "annotations" / f"person_keypoints_{split}2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Both data sets in detectron2's layout under one root (LVIS images under coco/ too)."""
    root = tmp_path_factory.mktemp("datasets")
    _write_lvis(root, "train", [1, 2, 3, 4])
    _write_lvis(root, "val", [11, 12, 13])
    _write_keypoints(root, "train", [21, 22, 23, 24])
    _write_keypoints(root, "val", [31, 32])
    return root


@pytest.fixture(scope="module")
def weights(converted_resnet) -> Path:
    """A random torchvision ResNet-18, converted to detectron2's format."""
    return converted_resnet("resnet18")


def _registered(config: str, root: Path):
    cfg = load_detection_cfg(config, ["MODEL.DEVICE", "cpu", "DATASETS.ROOT", str(root)])
    register_datasets(cfg)
    return cfg


def _ground_truth(record: dict, keypoints: bool) -> Instances:
    """The annotations of one data-set record as a model's predictions, every score 1."""
    annotations = record["annotations"]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
    instances = Instances((record["height"], record["width"]))
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.scores = torch.ones(len(annotations))
    instances.pred_classes = torch.tensor([a["category_id"] for a in annotations])
    if keypoints:
        points = [np.reshape(a["keypoints"], (17, 3)) for a in annotations]
        instances.pred_keypoints = torch.tensor(np.stack(points), dtype=torch.float32)
    else:
        masks = [polygons_to_bitmask(a["segmentation"], *instances.image_size) for a in annotations]
        instances.pred_masks = torch.from_numpy(np.stack(masks))
    return instances


def _score_ground_truth(cfg, name: str, out: Path, keypoints: bool) -> dict:
    evaluator = build_evaluator(cfg, name, str(out))
    evaluator.reset()
    for record in DatasetCatalog.get(name):
        outputs = {"instances": _ground_truth(record, keypoints)}
        evaluator.process([{"image_id": record["image_id"]}], [outputs])
    return evaluator.evaluate()


def test_lvis_layout_and_metadata(data_root):
    _registered(LVIS_CONFIG, data_root)
    meta = MetadataCatalog.get("lvis_v0.5_val")
    assert meta.evaluator_type == "lvis" and len(meta.thing_classes) == 1230
    assert meta.thing_classes[:3] == ["acorn", "aerosol_can", "air_conditioner"]
    records = DatasetCatalog.get("lvis_v0.5_train")
    assert [r["image_id"] for r in records] == [1, 2, 3, 4]
    assert records[0]["file_name"] == str(data_root / "coco" / "train2017" / "000000000001.jpg")
    assert records[0]["not_exhaustive_category_ids"] == [1] and records[0]["neg_category_ids"]
    assert [a["category_id"] for a in records[0]["annotations"]] == [0, 1]  # 0-based


def test_lvis_ground_truth_scores_100(data_root, tmp_path):
    cfg = _registered(LVIS_CONFIG, data_root)
    results = _score_ground_truth(cfg, "lvis_v0.5_val", tmp_path, keypoints=False)
    assert set(results) == {"bbox", "segm"}
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    # The objects are all small: LVIS's -100 for the empty medium / large ranges becomes NaN.
    assert results["segm"]["APs"] == pytest.approx(100.0) and math.isnan(results["segm"]["APl"])
    assert headline("lvis_v0.5_val", results) == {
        "task": "instance segmentation", "group": "segm", "metric": "AP",
        "value": results["segm"]["AP"],
    }  # fmt: skip


def test_lvis_no_detections_scores_0(data_root, tmp_path):
    cfg = _registered(LVIS_CONFIG, data_root)
    evaluator = build_evaluator(cfg, "lvis_v0.5_val", str(tmp_path))
    evaluator.reset()
    for record in DatasetCatalog.get("lvis_v0.5_val"):
        nothing = Instances((SIZE, SIZE), pred_boxes=Boxes(torch.zeros(0, 4)))
        nothing.scores, nothing.pred_classes = torch.zeros(0), torch.zeros(0, dtype=torch.long)
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": nothing}])
    assert evaluator.evaluate()["segm"]["AP"] == 0.0


def test_keypoint_layout_and_metadata(data_root):
    _registered(KEYPOINT_CONFIG, data_root)
    meta = MetadataCatalog.get("keypoints_coco_2017_train")
    assert meta.evaluator_type == "coco_keypoints" and meta.thing_classes == ["person"]
    assert len(meta.keypoint_names) == 17 and ("left_eye", "right_eye") in meta.keypoint_flip_map
    records = DatasetCatalog.get("keypoints_coco_2017_val")
    assert records[0]["file_name"] == str(data_root / "coco" / "val2017" / "000000000031.jpg")
    first = records[0]["annotations"][0]
    # detectron2 shifts keypoints by half a pixel (pixel indices to coordinates) and keeps v.
    assert first["keypoints"][:3] == [4 + 2 + 0.5, 6 + 2 + 0.5, 2]
    assert first["keypoints"][-3:] == [0.5, 0.5, 0]


def test_keypoint_ground_truth_scores_100(data_root, tmp_path):
    cfg = _registered(KEYPOINT_CONFIG, data_root)
    results = _score_ground_truth(cfg, "keypoints_coco_2017_val", tmp_path, keypoints=True)
    assert set(results) == {"bbox", "keypoints"}
    assert results["keypoints"]["AP"] == pytest.approx(100.0)
    assert headline("keypoints_coco_2017_val", results)["value"] == results["keypoints"]["AP"]
    assert headline("keypoints_coco_2017_val", results)["group"] == "keypoints"


def _detect(config: str, out: Path, *overrides: str) -> int:
    return detect.main(["--config-file", config, *TINY, "OUTPUT_DIR", str(out), *overrides])


@pytest.mark.parametrize(
    ("config", "test_set", "groups"),
    [
        (LVIS_CONFIG, "lvis_v0.5_val", {"bbox", "segm"}),
        (KEYPOINT_CONFIG, "keypoints_coco_2017_val", {"bbox", "keypoints"}),
    ],
)
def test_builtin_config_end_to_end(data_root, weights, tmp_path, config, test_set, groups):
    out = tmp_path / "out"
    assert _detect(config, out, "MODEL.WEIGHTS", str(weights), "DATASETS.ROOT", str(data_root)) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    assert set(final["results"][test_set]) == groups
    top = final["headline"][test_set]
    group = "segm" if "lvis" in config else "keypoints"
    assert (top["group"], top["metric"]) == (group, "AP")
    assert isinstance(top["value"], float) and 0.0 <= top["value"] <= 100.0
    assert top["value"] == final["results"][test_set][group]["AP"]
    log = (out / "log.txt").read_text()
    sampler = "RepeatFactorTrainingSampler" if "lvis" in config else "TrainingSampler"
    assert f"Using training sampler {sampler}" in log


def test_missing_files_are_named(tmp_path, capsys):
    empty = tmp_path / "datasets"
    empty.mkdir()
    assert _detect(LVIS_CONFIG, tmp_path / "out", "DATASETS.ROOT", str(empty)) == 2
    err = capsys.readouterr().err
    assert f"data set 'lvis_v0.5_train': {empty}/lvis/lvis_v0.5_train.json does not exist" in err
    assert "DATASETS.ROOT" in err and "lvis/, coco/" in err
    _write_keypoints(empty, "train", [1])
    assert _detect(KEYPOINT_CONFIG, tmp_path / "out", "DATASETS.ROOT", str(empty)) == 2
    err = capsys.readouterr().err
    assert (
        f"data set 'keypoints_coco_2017_val': {empty}/coco/annotations/"
        "person_keypoints_val2017.json does not exist"
    ) in err


def test_missing_lvis_package_is_one_line(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lvis", None)  # import lvis raises ImportError
    assert _detect(LVIS_CONFIG, tmp_path / "out", "DATASETS.ROOT", str(data_root)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        "data set 'lvis_v0.5_train' needs the 'lvis' package (LVIS json and evaluation): "
        "pip install unimoco[lvis]"
    )
    _registered(KEYPOINT_CONFIG, data_root)  # the other data sets do not need it
