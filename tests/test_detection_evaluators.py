"""The evaluators the trainer picks score perfect predictions 100 AP and no predictions 0 AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from unimoco.pretrain.data.shapes import SHAPE_CLASSES
from unimoco.transfer.config import load_detection_cfg
from unimoco.transfer.datasets import DatasetError, register_shapes
from unimoco.transfer.trainer import build_evaluator

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detection"
# Enough test scenes that every class occurs (VOC scores an absent class 0 AP).
NUM_TEST, SIZE = 16, 64


@pytest.fixture(scope="module", autouse=True)
def shapes(tmp_path_factory):
    register_shapes(2, NUM_TEST, SIZE, 0, tmp_path_factory.mktemp("cache"))
    dicts = DatasetCatalog.get("shapes_voc_test")
    classes = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert classes == set(range(len(SHAPE_CLASSES)))


def _cfg(name: str):
    return load_detection_cfg(str(CONFIGS / name), ["MODEL.DEVICE", "cpu"])


def _ground_truth_as_predictions(record: dict, with_masks: bool) -> Instances:
    """The annotations of one image as detections with score 1 (or 0.9 for every other)."""
    height, width = record["height"], record["width"]
    anns = record["annotations"]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    instances = Instances((height, width))
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.tensor([1.0 - 0.1 * (i % 2) for i in range(len(anns))])
    instances.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)
    if with_masks:
        masks = [mask_util.decode(a["segmentation"]).astype(bool) for a in anns]
        instances.pred_masks = (
            torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros(0, height, width, dtype=torch.bool)
        )
    return instances


def _empty(record: dict, with_masks: bool) -> Instances:
    instances = Instances((record["height"], record["width"]))
    instances.pred_boxes = Boxes(torch.zeros(0, 4))
    instances.scores = torch.zeros(0)
    instances.pred_classes = torch.zeros(0, dtype=torch.long)
    if with_masks:
        instances.pred_masks = torch.zeros(0, record["height"], record["width"], dtype=torch.bool)
    return instances


def _evaluate(evaluator, dataset: str, predict, with_masks: bool = False) -> dict:
    evaluator.reset()
    for record in DatasetCatalog.get(dataset):
        inputs = [
            {"image_id": record["image_id"], "height": record["height"], "width": record["width"]}
        ]
        evaluator.process(inputs, [{"instances": predict(record, with_masks)}])
    return evaluator.evaluate()


def test_voc_evaluator_perfect_and_empty():
    evaluator = build_evaluator(_cfg("shapes_voc_R_18_C4.yaml"), "shapes_voc_test")
    assert isinstance(evaluator, PascalVOCDetectionEvaluator)
    perfect = _evaluate(evaluator, "shapes_voc_test", _ground_truth_as_predictions)["bbox"]
    assert perfect == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})
    empty = _evaluate(evaluator, "shapes_voc_test", _empty)["bbox"]
    assert empty == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_coco_evaluator_perfect_and_empty_boxes_and_masks(tmp_path):
    cfg = _cfg("shapes_coco_R_18_FPN.yaml")
    evaluator = build_evaluator(cfg, "shapes_coco_val", str(tmp_path))
    assert isinstance(evaluator, COCOEvaluator)
    perfect = _evaluate(evaluator, "shapes_coco_val", _ground_truth_as_predictions, True)
    assert set(perfect) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert perfect[task]["AP"] == pytest.approx(100.0)
        assert perfect[task]["AP50"] == pytest.approx(100.0)
        assert perfect[task]["AP75"] == pytest.approx(100.0)
        for name in SHAPE_CLASSES:
            assert perfect[task][f"AP-{name}"] == pytest.approx(100.0)
    empty = _evaluate(evaluator, "shapes_coco_val", _empty, True)
    for task in ("bbox", "segm"):
        assert empty[task]["AP"] == 0.0 and empty[task]["AP50"] == 0.0


def test_coco_evaluator_without_masks_scores_boxes_only(tmp_path):
    cfg = _cfg("shapes_coco_R_18_FPN.yaml")
    cfg.MODEL.MASK_ON = False
    evaluator = build_evaluator(cfg, "shapes_coco_val", str(tmp_path))
    result = _evaluate(evaluator, "shapes_coco_val", _ground_truth_as_predictions)
    assert set(result) == {"bbox"} and result["bbox"]["AP"] == pytest.approx(100.0)


def test_unknown_evaluator_type_is_an_error():
    if "no_evaluator" not in DatasetCatalog.list():
        DatasetCatalog.register("no_evaluator", list)
    with pytest.raises(DatasetError, match=r"'no_evaluator' has evaluator_type None"):
        build_evaluator(_cfg("shapes_voc_R_18_C4.yaml"), "no_evaluator")
