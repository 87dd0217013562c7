"""Every detection config merges and builds on CPU, and carries the transfer recipe (DESIGN §4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from detectron2.modeling import build_model

import unimoco.transfer.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from unimoco.transfer.config import DetectionConfigError, load_detection_cfg, sync_bn_fallback

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detection"
ALL = sorted(p.name for p in CONFIGS.glob("*.yaml"))
NORM_KEYS = ["RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD"]


def _cfg(name: str, *overrides: str):
    return load_detection_cfg(str(CONFIGS / name), ["MODEL.DEVICE", "cpu", *overrides])


def test_the_issue_configs_exist():
    expected = {
        "Base-RCNN-C4-BN.yaml",
        "voc_R_50_C4_24k.yaml",
        "coco_R_50_C4_1x.yaml",
        "coco_R_50_C4_2x.yaml",
        "coco_R_50_FPN_1x.yaml",
        "coco_R_50_FPN_2x.yaml",
        "shapes_voc_R_18_C4.yaml",
        "shapes_voc_R_18_FPN.yaml",
        "shapes_coco_R_18_C4.yaml",
        "shapes_coco_R_18_FPN.yaml",
    }
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_config_merges_and_builds_on_cpu(name):
    cfg = _cfg(name)
    changed = sync_bn_fallback(cfg, world_size=1)
    assert all(cfg.MODEL[node].NORM != "SyncBN" for node in NORM_KEYS)
    assert "MODEL.RESNETS.NORM" in changed
    model = build_model(cfg)
    assert next(model.parameters()).device.type == "cpu"
    if cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm":
        assert type(model.roi_heads.res5.norm).__name__ == "BatchNorm2d"
        assert model.roi_heads.res5.norm.num_features == cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8


@pytest.mark.parametrize("name", ALL)
def test_transfer_recipe_for_torchvision_style_backbones(name):
    cfg = _cfg(name)
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.280, 103.530]
    assert cfg.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.TEST.PRECISE_BN.ENABLED is True
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    if "FPN" in name:
        assert [cfg.MODEL[n].NORM for n in NORM_KEYS] == ["SyncBN"] * 4
    else:
        assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"


def test_voc_protocol():
    cfg = _cfg("voc_R_50_C4_24k.yaml")
    assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval")
    assert cfg.DATASETS.TEST == ("voc_2007_test",)
    assert cfg.INPUT.MIN_SIZE_TRAIN == tuple(range(480, 801, 32))
    assert cfg.INPUT.MIN_SIZE_TEST == 800
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.02)
    assert (cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS) == (
        (18000, 22000),
        24000,
        100,
    )
    assert (cfg.MODEL.MASK_ON, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (False, 20)


@pytest.mark.parametrize(
    "name, steps, max_iter",
    [
        ("coco_R_50_C4_1x.yaml", (60000, 80000), 90000),
        ("coco_R_50_FPN_1x.yaml", (60000, 80000), 90000),
        ("coco_R_50_C4_2x.yaml", (120000, 160000), 180000),
        ("coco_R_50_FPN_2x.yaml", (120000, 160000), 180000),
    ],
)
def test_coco_schedules(name, steps, max_iter):
    cfg = _cfg(name)
    assert cfg.MODEL.MASK_ON is True
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    assert (cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_BATCH) == (
        steps,
        max_iter,
        16,
    )


def test_unknown_keys_and_bad_overrides_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    base = CONFIGS / "Base-RCNN-C4-BN.yaml"
    bad.write_text(f'_BASE_: "{base}"\nMODEL:\n  RESNET:\n    DEPTH: 18\n')
    with pytest.raises(DetectionConfigError, match=r"bad\.yaml.*MODEL\.RESNET"):
        load_detection_cfg(str(bad))
    with pytest.raises(DetectionConfigError, match=r"override.*SOLVER\.MAX_ITERS"):
        _cfg("shapes_voc_R_18_C4.yaml", "SOLVER.MAX_ITERS", "10")
    with pytest.raises(DetectionConfigError, match="odd number"):
        _cfg("shapes_voc_R_18_C4.yaml", "SOLVER.MAX_ITER")
    with pytest.raises(DetectionConfigError, match=r"missing\.yaml.*does not exist"):
        load_detection_cfg(str(tmp_path / "missing.yaml"))


def test_sync_bn_is_kept_on_gpus_and_made_naive_across_cpu_processes():
    gpus = _cfg("coco_R_50_FPN_1x.yaml", "MODEL.DEVICE", "cuda")
    assert sync_bn_fallback(gpus, world_size=8) == {}
    assert gpus.MODEL.FPN.NORM == "SyncBN"
    cpus = _cfg("coco_R_50_FPN_1x.yaml")
    changed = sync_bn_fallback(cpus, world_size=2)
    assert changed == {f"MODEL.{node}.NORM": "NaiveSyncBN" for node in NORM_KEYS}
