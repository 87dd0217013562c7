"""The shapes detection export (VOC + COCO layouts) and dataset registration for real data."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from unimoco.pretrain.data.shapes import SHAPE_CLASSES, render_scene, split_seed
from unimoco.transfer.config import load_detection_cfg
from unimoco.transfer.datasets import DatasetError, register_datasets, register_shapes
from unimoco.transfer.shapes_detection import export_shapes_detection

NUM_TRAIN, NUM_TEST, SIZE, SEED = 6, 4, 64, 3


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return export_shapes_detection(NUM_TRAIN, NUM_TEST, SIZE, SEED, tmp_path_factory.mktemp("c"))


def test_voc_layout(export):
    main = export.voc_dir / "ImageSets" / "Main"
    train = [f"train_{i:06d}" for i in range(NUM_TRAIN)]
    test = [f"test_{i:06d}" for i in range(NUM_TEST)]
    assert (main / "trainval.txt").read_text().split() == train
    assert (main / "train.txt").read_text().split() == train
    assert (main / "test.txt").read_text().split() == test
    assert (main / "val.txt").read_text().split() == test
    for image_id in train + test:
        assert Image.open(export.image_dir / f"{image_id}.jpg").size == (SIZE, SIZE)
        assert (export.voc_dir / "Annotations" / f"{image_id}.xml").is_file()
        assert (export.voc_dir / "SegmentationObject" / f"{image_id}.png").is_file()
    assert not [p for p in export.root.parent.iterdir() if ".tmp-" in p.name]


def test_annotations_match_the_rendered_scenes(export):
    scene = render_scene(split_seed(SEED, "val"), 2, SIZE, mode="detection")
    tree = ET.parse(export.voc_dir / "Annotations" / "test_000002.xml")
    objects = tree.findall("object")
    assert [o.find("name").text for o in objects] == [
        SHAPE_CLASSES[i.class_id] for i in scene.instances
    ]
    for obj, inst in zip(objects, scene.instances):
        box = [int(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")]
        x0, y0, x1, y1 = inst.box
        assert box == [x0 + 1, y0 + 1, x1, y1]  # VOC: 1-based, inclusive

    coco = json.loads(export.coco_val_json.read_text())
    assert [c["name"] for c in coco["categories"]] == list(SHAPE_CLASSES)
    image = next(i for i in coco["images"] if i["file_name"] == "test_000002.jpg")
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    assert len(anns) == len(scene.instances)
    for ann, inst in zip(anns, scene.instances):
        x0, y0, x1, y1 = inst.box
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert ann["category_id"] == inst.class_id + 1
        assert np.array_equal(mask_util.decode(ann["segmentation"]).astype(bool), inst.mask)
        assert ann["area"] == inst.mask.sum() and ann["iscrowd"] == 0

    labels = np.asarray(Image.open(export.voc_dir / "SegmentationObject" / "test_000002.png"))
    for k, inst in enumerate(scene.instances, start=1):
        assert np.array_equal(labels == k, inst.mask)


def test_export_is_reused(export):
    stamp = export.coco_train_json.stat().st_mtime_ns
    again = export_shapes_detection(NUM_TRAIN, NUM_TEST, SIZE, SEED, export.root.parents[1])
    assert again == export and export.coco_train_json.stat().st_mtime_ns == stamp


def test_default_root_honours_unimoco_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMOCO_CACHE", str(tmp_path))
    paths = export_shapes_detection(1, 1, 32, 0)
    assert paths.root.is_relative_to(tmp_path / "shapes" / "detection")


def test_registered_names_and_metadata(export):
    register_shapes(NUM_TRAIN, NUM_TEST, SIZE, SEED, export.root.parents[1])
    voc = MetadataCatalog.get("shapes_voc_test")
    assert (voc.evaluator_type, voc.year, voc.split) == ("pascal_voc", 2007, "test")
    assert voc.thing_classes == list(SHAPE_CLASSES)
    coco = MetadataCatalog.get("shapes_coco_val")
    assert (coco.evaluator_type, coco.json_file) == ("coco", str(export.coco_val_json))
    voc_dicts = DatasetCatalog.get("shapes_voc_test")
    coco_dicts = DatasetCatalog.get("shapes_coco_val")
    assert len(voc_dicts) == len(coco_dicts) == NUM_TEST
    assert len(DatasetCatalog.get("shapes_voc_train")) == NUM_TRAIN
    for v, c in zip(voc_dicts, coco_dicts):  # same boxes through both loaders
        x, y, w, h = np.array([a["bbox"] for a in c["annotations"]]).T
        np.testing.assert_allclose(
            [a["bbox"] for a in v["annotations"]], np.stack([x, y, x + w, y + h], axis=1)
        )
        assert [a["category_id"] for a in v["annotations"]] == [
            a["category_id"] for a in c["annotations"]
        ]


def _cfg(*overrides: str):
    config = Path(__file__).resolve().parents[1] / "configs" / "detection" / "voc_R_50_C4_24k.yaml"
    return load_detection_cfg(str(config), ["MODEL.DEVICE", "cpu", *overrides])


def _fake_voc(root, year: int, skip: str = "") -> None:
    voc = root / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        if sub != skip:
            (voc / sub).mkdir(parents=True)
    if skip != "ImageSets/Main":
        for split in ("trainval", "test"):
            (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("000001\n")


def test_voc_root_missing_annotations_names_the_folder(tmp_path):
    _fake_voc(tmp_path, 2007, skip="Annotations")
    _fake_voc(tmp_path, 2012)
    with pytest.raises(DatasetError, match=rf"voc_2007_trainval.*{tmp_path}/VOC2007/Annotations"):
        register_datasets(_cfg("DATASETS.ROOT", str(tmp_path)))


def test_voc_root_missing_image_sets_names_the_folder(tmp_path):
    _fake_voc(tmp_path, 2007)
    _fake_voc(tmp_path, 2012, skip="ImageSets/Main")
    with pytest.raises(DatasetError, match=r"voc_2012_trainval.*VOC2012/ImageSets/Main"):
        register_datasets(_cfg("DATASETS.ROOT", str(tmp_path)))


def test_complete_voc_root_registers_detectron2_names(tmp_path):
    _fake_voc(tmp_path, 2007)
    _fake_voc(tmp_path, 2012)
    register_datasets(_cfg("DATASETS.ROOT", str(tmp_path)))
    meta = MetadataCatalog.get("voc_2012_trainval")
    assert (meta.dirname, meta.evaluator_type) == (str(tmp_path / "VOC2012"), "pascal_voc")


def test_coco_json_and_images_are_checked(tmp_path):
    cfg = _cfg(
        "DATASETS.TRAIN",
        "('mine_train',)",
        "DATASETS.TEST",
        "()",
        "DATASETS.EXTRA_COCO",
        f"['mine_train,{tmp_path}/train.json,{tmp_path}/images']",
    )
    with pytest.raises(DatasetError, match=rf"'mine_train': {tmp_path}/train\.json does not exist"):
        register_datasets(cfg)
    (tmp_path / "train.json").write_text("{}")
    with pytest.raises(DatasetError, match=rf"'mine_train': {tmp_path}/images does not exist$"):
        register_datasets(cfg)
    (tmp_path / "images").mkdir()
    register_datasets(cfg)
    assert MetadataCatalog.get("mine_train").evaluator_type == "coco"


def test_config_mistakes_are_named(export):
    with pytest.raises(DatasetError, match=r"EXTRA_COCO entry 'a,b'"):
        register_datasets(_cfg("DATASETS.EXTRA_COCO", "['a,b']"))
    with pytest.raises(DatasetError, match=r"'nope_train' is not registered"):
        register_datasets(_cfg("DATASETS.TRAIN", "('nope_train',)", "DATASETS.TEST", "()"))
    shapes = [
        "DATASETS.TRAIN",
        "('shapes_voc_train',)",
        "DATASETS.TEST",
        "('shapes_voc_test',)",
        "DATASETS.SHAPES.ROOT",
        str(export.root.parents[1]),
        "DATASETS.SHAPES.NUM_TRAIN",
        str(NUM_TRAIN),
        "DATASETS.SHAPES.NUM_TEST",
        str(NUM_TEST),
        "DATASETS.SHAPES.IMAGE_SIZE",
        str(SIZE),
        "DATASETS.SHAPES.SEED",
        str(SEED),
    ]
    with pytest.raises(DatasetError, match=r"10 classes but MODEL.ROI_HEADS.NUM_CLASSES = 20"):
        register_datasets(_cfg(*shapes))
