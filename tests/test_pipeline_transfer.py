"""A pipeline with several transfer tasks: DETECT plus named TRANSFER tasks, each fine-tuned from
every backbone into its own folder, each a table and a plot of its own in the report; task
overrides on the command line; bad task entries fail early naming the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from test_pipeline import _tables

from unimoco.pipeline import command
from unimoco.pipeline.config import load_pipeline_cfg, transfer_tasks

DEMO = Path(__file__).resolve().parents[1] / "configs" / "pipeline" / "shapes_demo.yaml"
SHAPES = """[DATASETS.SHAPES.ROOT, {cache}, DATASETS.SHAPES.NUM_TRAIN, 4,
         DATASETS.SHAPES.NUM_TEST, 4, DATASETS.SHAPES.IMAGE_SIZE, 64,
         INPUT.MIN_SIZE_TRAIN, "(64,)", INPUT.MAX_SIZE_TRAIN, 64,
         INPUT.MIN_SIZE_TEST, 64, INPUT.MAX_SIZE_TEST, 64, SOLVER.IMS_PER_BATCH, 2,
         SOLVER.MAX_ITER, 3, SOLVER.STEPS, "(2,)", SOLVER.WARMUP_ITERS, 1,
         MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, 8, TEST.PRECISE_BN.NUM_ITER, 1,
         DATALOADER.NUM_WORKERS, 0]"""
SHAPES_SEG = SHAPES[:-1] + ", INPUT.CROP.SIZE, [64, 64]]"
# The demo shrunk to a few pretraining steps, no classification evaluation, one baseline, and a
# second transfer task: FCN semantic segmentation of the shapes scenes.
TINY = f"""
_BASE_: {{demo}}
OUTPUT_DIR: {{out}}
PRETRAIN:
  OPTS: [EVAL.KNN_PERIOD, 0, DATA.ROOT, {{cache}}, DATA.SHAPES.NUM_TRAIN, 40,
         DATA.SHAPES.NUM_VAL, 10, DATA.SHAPES.IMAGE_SIZE, 32, MOCO.K, 16, SOLVER.BATCH_SIZE, 8,
         SOLVER.EPOCHS, 1,
         DATA.NUM_WORKERS, 0, LOG.PERIOD, 1, LOG.TENSORBOARD, False]
EVAL:
  KNN: False
  LINCLS: False
DETECT:
  OPTS: {SHAPES}
TRANSFER:
  seg:
    CONFIG_FILE: segmentation/shapes_FCN_R_18
    OPTS: {SHAPES_SEG}
BASELINES: [random]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The two-task pipeline, run once, with the second task's iterations overridden on the
    command line."""
    root = tmp_path_factory.mktemp("pipeline_tasks")
    config = root / "tiny.yaml"
    config.write_text(TINY.format(demo=DEMO, out=root / "out", cache=root / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    argv = ["--config-file", str(config), "TRANSFER.seg.SOLVER.MAX_ITER", "4"]
    assert command.main(argv) == 0
    yield config, root / "out"
    torch.set_num_threads(threads)


def test_every_task_runs_from_every_backbone(run):
    _, out = run
    folders = {
        "detect": out / "detect",
        "seg": out / "transfer" / "seg",
    }
    for task, folder in folders.items():
        for backbone in ("pretrained", "random"):
            final = json.loads((folder / backbone / "final_metrics.json").read_text())
            assert final["max_iter"] == (4 if task == "seg" else 3), task
            weights = final["weights"]
            assert weights == (
                "" if backbone == "random" else str(out / "convert" / backbone / "backbone.pkl")
            )
    seg = json.loads((out / "transfer" / "seg" / "random" / "final_metrics.json").read_text())
    assert seg["headline"]["shapes_sem_seg_test"]["metric"] == "mIoU"
    assert 0 <= seg["headline"]["shapes_sem_seg_test"]["value"] <= 100
    assert set(seg["results"]["shapes_sem_seg_test"]) == {"sem_seg"}


def test_report_has_a_table_and_plot_per_task(run):
    _, out = run
    markdown = (out / "report.md").read_text()
    assert "## Detection (shapes_voc_test)" in markdown
    assert "## Semantic segmentation (shapes_sem_seg_test)" in markdown
    assert "Semantic segmentation mIoU on shapes_sem_seg_test: pretrained (ours) " in markdown
    tables = [t for t in _tables(markdown) if t[0][0] == "backbone"]
    assert tables[0][0] == ["backbone", "AP", "AP50", "AP75", "AP vs random"]
    assert tables[1][0] == ["backbone", "mIoU", "fwIoU", "mACC", "pACC", "mIoU vs random"]
    for table in tables[:2]:
        assert [row[0] for row in table[1:]] == ["pretrained (ours)", "random init"]
        for row in table[1:]:
            for cell in row[1:]:
                assert (
                    cell == "—" and row[0] == "random init" or re.fullmatch(r"[+-]?\d+\.\d\d", cell)
                )
    for name in ("detection_ap.png", "seg.png"):
        assert (out / "report" / name).read_bytes().startswith(b"\x89PNG"), name
    recipes = next(t for t in _tables(markdown) if t[0] == ["stage", "config file", "overrides"])
    assert [row[0] for row in recipes][-2:] == ["detect", "seg"]
    assert "SOLVER.MAX_ITER 4" in recipes[-1][2]


def test_transfer_tasks_without_detect(tmp_path):
    config = tmp_path / "only.yaml"
    config.write_text(
        f"_BASE_: {DEMO}\nDETECT:\n  CONFIG_FILE: ''\n"
        "TRANSFER:\n  seg: {CONFIG_FILE: detection/shapes_coco_R_18_C4}\n"
    )
    cfg = load_pipeline_cfg(str(config))
    tasks = transfer_tasks(cfg)
    assert list(tasks) == ["seg"] and list(tasks["seg"].OPTS) == []
    assert tasks["seg"].CONFIG_FILE.endswith("configs/detection/shapes_coco_R_18_C4.yaml")


@pytest.mark.parametrize(
    "entry, overrides, message",
    [
        ("seg: {CONFIG_FILE: nowhere.yaml}", [], "TRANSFER.seg.CONFIG_FILE"),
        ("seg: {CONFIG_FILES: x}", [], "TRANSFER.seg = ['CONFIG_FILES']: expected a task"),
        ("eval: {CONFIG_FILE: detection/shapes_coco_R_18_C4}", [], "TRANSFER.eval: the name"),
        ("seg: {OPTS: [A]}", [], "TRANSFER.seg.CONFIG_FILE is empty"),
        (
            "seg: {CONFIG_FILE: detection/shapes_coco_R_18_C4}",
            ["TRANSFER.seg.SOLVER.MAX_ITERS", "2"],
            "TRANSFER.seg.CONFIG_FILE with TRANSFER.seg.OPTS",
        ),
        (
            "seg: {CONFIG_FILE: detection/shapes_coco_R_18_C4}",
            ["TRANSFER.sag.SOLVER.MAX_ITER", "2"],
            "TRANSFER.sag: no such transfer task",
        ),
    ],
)
def test_bad_transfer_task_fails_early_naming_the_key(tmp_path, capsys, entry, overrides, message):
    config = tmp_path / "bad.yaml"
    config.write_text(f"_BASE_: {DEMO}\nOUTPUT_DIR: {tmp_path / 'out'}\nTRANSFER:\n  {entry}\n")
    assert command.main(["--config-file", str(config), *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
