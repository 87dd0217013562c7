"""Every detection config merges and builds on CPU and carries the transfer recipe; the R50-C4
configs are MoCo's detection protocol key for key (docs/methods.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import unimoco.transfer.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from unimoco.transfer.config import (
    DetectionConfigError,
    add_unimoco_config,
    load_detection_cfg,
    sync_bn_fallback,
)

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
    if "FPN" in name:
        assert [cfg.MODEL[n].NORM for n in NORM_KEYS] == ["SyncBN"] * 4
    else:  # MoCo's C4 norm; the ROI head's res5 and extra norm take MODEL.RESNETS.NORM
        assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN"
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
    with pytest.raises(
        DetectionConfigError, match=r"missing\.yaml.*neither a file nor a built-in config"
    ):
        load_detection_cfg(str(tmp_path / "missing.yaml"))


def test_sync_bn_is_kept_on_gpus_and_made_naive_across_cpu_processes():
    gpus = _cfg("coco_R_50_FPN_1x.yaml", "MODEL.DEVICE", "cuda")
    assert sync_bn_fallback(gpus, world_size=8) == {}
    assert gpus.MODEL.FPN.NORM == "SyncBN"
    cpus = _cfg("coco_R_50_FPN_1x.yaml")
    changed = sync_bn_fallback(cpus, world_size=2)
    assert changed == {f"MODEL.{node}.NORM": "naiveSyncBN" for node in NORM_KEYS}
    build_model(cpus)  # a norm name detectron2's get_norm knows


# MoCo's detection protocol (facebookresearch/moco, detection/configs: Base-RCNN-C4-BN.yaml with
# pascal_voc_R_50_C4_24k[_moco].yaml and coco_R_50_C4_2x[_moco].yaml; the 1x config is the 2x
# one on detectron2's 1x schedule). Every key of the resolved config that MoCo's files set, with
# MoCo's values; everything else is detectron2's default in both.
C4_PROTOCOL = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.WEIGHTS": "",  # the converted backbone, given on the command line
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.OUT_FEATURES": ["res4"],
    "MODEL.RESNETS.NORM": "naiveSyncBN",
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.ROI_HEADS.NAME": "Res5ROIHeadsExtraNorm",
    "MODEL.ROI_BOX_HEAD.NORM": "",
    "MODEL.ROI_MASK_HEAD.NORM": "",
    "INPUT.FORMAT": "RGB",
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MAX_SIZE_TEST": 1333,
    "TEST.PRECISE_BN.ENABLED": True,
    "TEST.PRECISE_BN.NUM_ITER": 200,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 0.02,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR",
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WEIGHT_DECAY": 0.0001,
}
VOC = {
    "MODEL.MASK_ON": False,
    "MODEL.ROI_HEADS.NUM_CLASSES": 20,
    "INPUT.MIN_SIZE_TRAIN": tuple(range(480, 801, 32)),
    "DATASETS.TRAIN": ("voc_2007_trainval", "voc_2012_trainval"),
    "DATASETS.TEST": ("voc_2007_test",),
    "SOLVER.STEPS": (18000, 22000),
    "SOLVER.MAX_ITER": 24000,
    "SOLVER.WARMUP_ITERS": 100,
}
COCO = {
    "MODEL.MASK_ON": True,
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "INPUT.MIN_SIZE_TRAIN": tuple(range(640, 801, 32)),
    "DATASETS.TRAIN": ("coco_2017_train",),
    "DATASETS.TEST": ("coco_2017_val",),
    "SOLVER.WARMUP_ITERS": 1000,
}
C4_CONFIGS = {
    "voc_R_50_C4_24k.yaml": {**C4_PROTOCOL, **VOC},
    "coco_R_50_C4_1x.yaml": {
        **C4_PROTOCOL,
        **COCO,
        "SOLVER.STEPS": (60000, 80000),
        "SOLVER.MAX_ITER": 90000,
    },
    "coco_R_50_C4_2x.yaml": {
        **C4_PROTOCOL,
        **COCO,
        "SOLVER.STEPS": (120000, 160000),
        "SOLVER.MAX_ITER": 180000,
    },
}


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", sorted(C4_CONFIGS))
def test_c4_configs_are_the_moco_protocol(name):
    resolved = _flat(load_detection_cfg(str(CONFIGS / name)))  # as a user resolves it
    expected = C4_CONFIGS[name]
    assert {key: resolved[key] for key in expected} == expected
    # Every other key is detectron2's default (plus ours), as in MoCo's files.
    defaults = get_cfg()
    add_unimoco_config(defaults)
    others = {k: v for k, v in _flat(defaults).items() if k not in expected}
    assert {k: resolved[k] for k in others} == others


def test_c4_norm_is_naive_sync_bn_in_backbone_and_roi_head_and_bn_in_one_process():
    cfg = _cfg("coco_R_50_C4_1x.yaml")
    model = build_model(cfg)  # as built on several GPUs: no fallback
    norms = {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert norms == {"NaiveSyncBatchNorm"}
    assert type(model.roi_heads.res5.norm).__name__ == "NaiveSyncBatchNorm"
    assert type(model.backbone.stem.conv1.norm).__name__ == "NaiveSyncBatchNorm"

    gpus = _cfg("voc_R_50_C4_24k.yaml", "MODEL.DEVICE", "cuda")
    assert sync_bn_fallback(gpus, world_size=8) == {}
    cpus = _cfg("voc_R_50_C4_24k.yaml")
    assert sync_bn_fallback(cpus, world_size=2) == {}  # naiveSyncBN syncs over gloo too
    assert cpus.MODEL.RESNETS.NORM == "naiveSyncBN"
    one = _cfg("voc_R_50_C4_24k.yaml")
    assert sync_bn_fallback(one, world_size=1) == {"MODEL.RESNETS.NORM": "BN"}
