"""Cityscapes: a tiny tree in the real on-disk layout (leftImg8bit / gtFine, city folders, the
polygons json and the label images cityscapesscripts makes from it), detectron2's evaluators
scoring ground-truth-derived predictions at their maximum in one CPU process, the Mask R-CNN
config end to end, and the errors for a missing package, folder or trainId label image."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.structures import Instances
from PIL import Image

from unimoco.transfer import detect
from unimoco.transfer.cityscapes import register_cityscapes_root
from unimoco.transfer.config import load_detection_cfg
from unimoco.transfer.tasks import build_evaluator

pytestmark = pytest.mark.usefixtures("one_thread")

cityscapesscripts = pytest.importorskip("cityscapesscripts")
pytest.importorskip("shapely")

WIDTH, HEIGHT = 128, 64
# split -> (city, frames).
SPLITS = {"train": ("aachen", 3), "val": ("frankfurt", 2)}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# R18 at 64 px for a few iterations: the pipeline, not the accuracy, is under test.
TINY = [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "3",
    "SOLVER.STEPS",
    "(2,)",
    "SOLVER.WARMUP_ITERS",
    "1",
    "TEST.EVAL_PERIOD",
    "0",
    "TEST.PRECISE_BN.NUM_ITER",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.DEVICE",
    "cpu",
]
MASK_RCNN = [
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "128",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
]
# BasicBlock ResNets cannot dilate res5: the head reads res4 (stride 16), as shapes_FCN_R_18 does.
FCN = [
    "MODEL.RESNETS.RES5_DILATION",
    "1",
    "MODEL.RESNETS.OUT_FEATURES",
    "['res4']",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES",
    "['res4']",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
    "INPUT.CROP.SIZE",
    "[48, 96]",
]
INSTANCE_CONFIG = "detection/cityscapes_mask_rcnn_R_50_FPN.yaml"
SEM_SEG_CONFIG = "segmentation/cityscapes_FCN_R_50_90k.yaml"  # fmt: skip


def _rectangle(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _objects(frame: int) -> list[dict]:
    """Sky, building and road bands, then a car and a person (drawn later, so on top) that move
    with the frame; every instance is over cityscapesscripts' 100-pixel minimum."""
    car, person = 8 + 24 * frame, 90 - 16 * frame
    return [
        {"label": "sky", "polygon": _rectangle(0, 0, WIDTH - 1, 20)},
        {"label": "building", "polygon": _rectangle(0, 20, WIDTH - 1, 36)},
        {"label": "road", "polygon": _rectangle(0, 36, WIDTH - 1, HEIGHT - 1)},
        {"label": "car", "polygon": _rectangle(car, 30, car + 32, 50)},
        {"label": "person", "polygon": _rectangle(person, 18, person + 12, 52)},
    ]


def write_cityscapes(root: Path) -> Path:
    """``root/cityscapes`` as the download unpacks it (``leftImg8bit/<split>/<city>/
    <city>_<seq>_<frame>_leftImg8bit.png``, ``gtFine`` alike with ``_gtFine_polygons.json``), with
    the ``labelIds`` / ``instanceIds`` / ``labelTrainIds`` images made by cityscapesscripts'
    converters from the polygons, as for the real data (instance ids as 16-bit PNG: the
    converter's 32-bit image is one newer Pillow versions no longer write as PNG)."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    rng = np.random.default_rng(0)
    for split, (city, frames) in SPLITS.items():
        images = root / "cityscapes" / "leftImg8bit" / split / city
        gt = root / "cityscapes" / "gtFine" / split / city
        images.mkdir(parents=True)
        gt.mkdir(parents=True)
        for frame in range(frames):
            stem = f"{city}_000000_{frame:06d}"
            pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / f"{stem}_leftImg8bit.png")
            polygons = gt / f"{stem}_gtFine_polygons.json"
            annotation = {"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": _objects(frame)}
            polygons.write_text(json.dumps(annotation))
            json2labelImg(str(polygons), str(gt / f"{stem}_gtFine_labelIds.png"), "ids")
            json2labelImg(str(polygons), str(gt / f"{stem}_gtFine_labelTrainIds.png"), "trainIds")
            parsed = Annotation()
            parsed.fromJsonFile(str(polygons))
            instance_ids = np.asarray(createInstanceImage(parsed, "ids")).astype(np.uint16)
            Image.fromarray(instance_ids).save(gt / f"{stem}_gtFine_instanceIds.png")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, converted_resnet) -> Path:
    """The tiny tree and a converted random R18 in one temporary folder."""
    root = write_cityscapes(tmp_path_factory.mktemp("cityscapes"))
    (root / "r18.pkl").symlink_to(converted_resnet("resnet18"))
    return root


def test_the_written_tree_has_the_real_encodings(workdir):
    gt = workdir / "cityscapes" / "gtFine" / "val" / "frankfurt"
    instances = np.asarray(Image.open(gt / "frankfurt_000000_000001_gtFine_instanceIds.png"))
    # Stuff keeps its label id (sky 23, building 11, road 7); things are id * 1000 + k.
    assert set(np.unique(instances)) == {7, 11, 23, 24000, 26000}
    train_ids = np.asarray(Image.open(gt / "frankfurt_000000_000001_gtFine_labelTrainIds.png"))
    assert set(np.unique(train_ids)) == {0, 2, 10, 11, 13}


def _evaluate(workdir: Path, name: str, outputs_of) -> dict:
    """Run the data set's evaluator from the task table over its images, with the outputs
    ``outputs_of(gt file stem)`` gives."""
    register_cityscapes_root(workdir)
    evaluator = build_evaluator(CfgNode(), name, str(workdir / "eval" / name))
    evaluator.reset()
    meta = MetadataCatalog.get(name)
    for image in sorted(Path(meta.image_dir).glob("*/*_leftImg8bit.png")):
        stem = image.name.removesuffix("_leftImg8bit.png")
        stem = str(Path(meta.gt_dir) / image.parent.name / stem)
        evaluator.process([{"file_name": str(image)}], [outputs_of(stem)])
    return evaluator.evaluate()


def _instances_from_gt(stem: str, thing_classes: list[str]) -> dict:
    from cityscapesscripts.helpers.labels import id2label

    ids = np.asarray(Image.open(f"{stem}_gtFine_instanceIds.png"))
    things = [i for i in np.unique(ids) if i >= 1000]
    instances = Instances((HEIGHT, WIDTH))
    instances.pred_masks = torch.stack([torch.from_numpy(ids == i) for i in things])
    names = [id2label[int(i) // 1000].name for i in things]
    instances.pred_classes = torch.tensor([thing_classes.index(n) for n in names])
    instances.scores = torch.full((len(things),), 0.9)
    return {"instances": instances}


def test_instance_evaluator_scores_ground_truth_100_and_nothing_0(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "cityscapes_fine_instance_seg_val"
    register_cityscapes_root(workdir)
    classes = MetadataCatalog.get(name).thing_classes
    perfect = _evaluate(workdir, name, lambda stem: _instances_from_gt(stem, classes))
    assert perfect["segm"] == pytest.approx({"AP": 100.0, "AP50": 100.0})
    nothing = _evaluate(workdir, name, lambda stem: {})
    assert nothing["segm"] == pytest.approx({"AP": 0.0, "AP50": 0.0})
    # cityscapesscripts writes matches.json into the working directory: ours is the output folder.
    assert not (tmp_path / "matches.json").exists()
    assert (workdir / "eval" / name / "matches.json").is_file()


def _scores_from_gt(stem: str, constant: int | None = None) -> dict:
    train_ids = np.asarray(Image.open(f"{stem}_gtFine_labelTrainIds.png")).astype(np.int64)
    if constant is not None:
        train_ids = np.full_like(train_ids, constant)
    scores = torch.nn.functional.one_hot(torch.from_numpy(train_ids), 19)
    return {"sem_seg": scores.permute(2, 0, 1).float()}


def test_sem_seg_evaluator_scores_ground_truth_100_and_all_road_by_hand(workdir):
    name = "cityscapes_fine_sem_seg_val"
    assert _evaluate(workdir, name, _scores_from_gt)["sem_seg"]["IoU"] == pytest.approx(100.0)
    # All road: road's IoU is its share of the pixels, the other four classes present score 0.
    gt = workdir / "cityscapes" / "gtFine" / "val" / "frankfurt"
    train_ids = [np.asarray(Image.open(f)) for f in gt.glob("*_labelTrainIds.png")]
    road = np.mean([ids == 0 for ids in train_ids])
    all_road = _evaluate(workdir, name, lambda stem: _scores_from_gt(stem, constant=0))
    assert all_road["sem_seg"]["IoU"] == pytest.approx(100.0 * road / 5, abs=1e-3)


def test_mask_rcnn_config_is_detectron2s_cityscapes_protocol():
    cfg = load_detection_cfg("detection/cityscapes_mask_rcnn_R_50_FPN")
    assert cfg.DATASETS.TRAIN == ("cityscapes_fine_instance_seg_train",)
    assert cfg.DATASETS.TEST == ("cityscapes_fine_instance_seg_val",)
    assert (cfg.MODEL.MASK_ON, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (True, 8)
    assert cfg.INPUT.MIN_SIZE_TRAIN == tuple(range(800, 1025, 32))
    assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"
    assert (cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (
        2048,
        1024,
        2048,
    )
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (8, 0.01)
    assert (cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD) == ((18000,), 24000, 8000)


def test_fcn_config_is_mocos_cityscapes_protocol():
    cfg = load_detection_cfg("segmentation/cityscapes_FCN_R_50_90k")
    assert cfg.DATASETS.TRAIN == ("cityscapes_fine_sem_seg_train",)
    assert cfg.DATASETS.TEST == ("cityscapes_fine_sem_seg_val",)
    assert (cfg.MODEL.SEM_SEG_HEAD.NAME, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == ("FCNHead", 19)
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES5_DILATION) == (50, 2)
    assert (cfg.INPUT.CROP.SIZE, cfg.INPUT.SCALE_RANGE) == ([769, 769], (0.5, 2.0))
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY) == (
        16,
        0.01,
        0.0001,
    )
    assert (cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER) == ((63000, 81000), 90000)


def _detect(workdir: Path, config: str, out: Path, *overrides: str) -> int:
    return detect.main(
        [
            "--config-file",
            str(CONFIGS / config),
            *TINY,
            *(MASK_RCNN if config == INSTANCE_CONFIG else FCN),
            "MODEL.WEIGHTS",
            str(workdir / "r18.pkl"),
            "DATASETS.ROOT",
            str(workdir),
            "OUTPUT_DIR",
            str(out),
            *overrides,
        ]
    )


def test_mask_rcnn_end_to_end(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = workdir / "mask_rcnn"
    assert _detect(workdir, INSTANCE_CONFIG, out) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    name = "cityscapes_fine_instance_seg_val"
    assert set(final["results"][name]["segm"]) == {"AP", "AP50"}
    headline = final["headline"][name]
    assert headline["task"] == "instance segmentation"
    assert (headline["group"], headline["metric"]) == ("segm", "AP")
    assert 0.0 <= headline["value"] <= 100.0
    assert not (tmp_path / "matches.json").exists()
    assert (out / "inference" / name / "matches.json").is_file()


def test_fcn_end_to_end(workdir):
    out = workdir / "fcn"
    assert _detect(workdir, SEM_SEG_CONFIG, out) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    name = "cityscapes_fine_sem_seg_val"
    assert set(final["results"][name]["sem_seg"]) == {"IoU", "iIoU", "IoU_sup", "iIoU_sup"}
    headline = final["headline"][name]
    assert headline["task"] == "semantic segmentation"
    assert (headline["group"], headline["metric"]) == ("sem_seg", "IoU")
    assert 0.0 <= headline["value"] <= 100.0
    assert "Running precise-BN" in (out / "log.txt").read_text()


def test_missing_package_folder_and_train_ids_are_one_line_errors(
    workdir, tmp_path, monkeypatch, capsys
):
    instance = INSTANCE_CONFIG
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "cityscapesscripts", None)
        assert _detect(workdir, instance, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert (
        "'cityscapes_fine_instance_seg_train' needs the Python package 'cityscapesscripts'," in err
    )
    assert "pip install 'unimoco[cityscapes]'" in err

    nowhere = tmp_path / "nowhere"
    assert _detect(workdir, instance, tmp_path / "b", "DATASETS.ROOT", str(nowhere)) == 2
    err = capsys.readouterr().err
    assert f"{nowhere}/cityscapes/leftImg8bit/train does not exist" in err
    assert "holds cityscapes/" in err

    root = write_cityscapes(tmp_path / "data")
    gt = root / "cityscapes" / "gtFine" / "train" / "aachen"
    (gt / "aachen_000000_000001_gtFine_labelTrainIds.png").unlink()
    assert _detect(workdir, SEM_SEG_CONFIG, tmp_path / "c", "DATASETS.ROOT", str(root)) == 2
    err = capsys.readouterr().err
    assert f"{gt}/aachen_000000_000001_gtFine_labelTrainIds.png does not exist" in err
    assert f"CITYSCAPES_DATASET={root}/cityscapes csCreateTrainIdLabelImgs" in err
