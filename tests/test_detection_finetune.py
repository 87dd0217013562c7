"""End to end: unimoco detect fine-tunes the small R18 configs on the shapes data (VOC and COCO
layouts) from converted weights, and scores them with the real evaluators."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from unimoco.pretrain.model.resnet import build_resnet
from unimoco.transfer import convert, detect
from unimoco.transfer.trainer import PreemptionHook

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detection"
# A few tiny images and iterations: the pipeline, not the accuracy, is under test.
TINY = [
    "DATASETS.SHAPES.NUM_TRAIN",
    "8",
    "DATASETS.SHAPES.NUM_TEST",
    "4",
    "DATASETS.SHAPES.IMAGE_SIZE",
    "64",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "64",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "64",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "20",
    "SOLVER.STEPS",
    "(15,)",
    "SOLVER.WARMUP_ITERS",
    "5",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
    "TEST.PRECISE_BN.NUM_ITER",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.DEVICE",
    "cpu",
]
RUNS = {
    "shapes_voc_R_18_C4.yaml": "shapes_voc_test",
    "shapes_voc_R_18_FPN.yaml": "shapes_voc_test",
    "shapes_coco_R_18_C4.yaml": "shapes_coco_val",
    "shapes_coco_R_18_FPN.yaml": "shapes_coco_val",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Outputs and the shapes cache in one temporary folder, a converted random R18 as the
    backbone, and one thread (the ops are so small that a second one costs more than it gives)."""
    root = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    torch.save(build_resnet("resnet18").state_dict(), root / "r18.pth")
    assert convert.main([str(root / "r18.pth"), str(root / "r18.pkl")]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield root
    torch.set_num_threads(threads)


def _detect(workdir: Path, config: str, name: str, *flags: str, overrides: tuple = ()) -> dict:
    out = workdir / name
    argv = [
        "--config-file",
        str(CONFIGS / config),
        *flags,
        *TINY,
        "MODEL.WEIGHTS",
        str(workdir / "r18.pkl"),
        "DATASETS.SHAPES.ROOT",
        str(workdir / "cache"),
        "OUTPUT_DIR",
        str(out),
        *overrides,
    ]
    assert detect.main(argv) == 0
    return json.loads((out / "final_metrics.json").read_text())


def _check_ap(metrics: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 100.0, key
    assert not any(isinstance(v, float) and math.isnan(v) for v in metrics.values())


@pytest.mark.parametrize("config", RUNS)
def test_finetune_end_to_end(workdir, config):
    name = config.removesuffix(".yaml")
    final = _detect(workdir, config, name)
    assert final["max_iter"] == 20 and final["weights"].endswith("r18.pkl")
    results = final["results"][RUNS[config]]
    if "voc" in config:
        assert set(results) == {"bbox"}
        _check_ap(results["bbox"], ("AP", "AP50", "AP75"))
        assert results["bbox"]["AP50"] >= results["bbox"]["AP75"]
    else:
        assert set(results) == {"bbox", "segm"}
        for task in ("bbox", "segm"):
            _check_ap(results[task], ("AP", "AP50", "AP75"))
    out = workdir / name
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "SyncBN cannot sync in 1 process(es) on cpu: MODEL.RESNETS.NORM = BN" in log
    assert "Running precise-BN" in log
    assert "NORM: BN" in (out / "config.yaml").read_text()


def test_eval_only_reproduces_and_resume_continues(workdir):
    out = workdir / "shapes_voc_R_18_C4"
    trained = json.loads((out / "final_metrics.json").read_text())["results"]
    evaluated = _detect(
        workdir,
        "shapes_voc_R_18_C4.yaml",
        "eval",
        "--eval-only",
        overrides=("MODEL.WEIGHTS", str(out / "model_final.pth")),
    )
    bbox = evaluated["results"]["shapes_voc_test"]["bbox"]
    assert bbox == pytest.approx(trained["shapes_voc_test"]["bbox"])

    _detect(
        workdir,
        "shapes_voc_R_18_C4.yaml",
        "shapes_voc_R_18_C4",
        "--resume",
        overrides=("SOLVER.MAX_ITER", "22"),
    )
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 21
    assert "Starting training from iteration 20" in (out / "log.txt").read_text()


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    voc = [
        "--config-file",
        str(CONFIGS / "voc_R_50_C4_24k.yaml"),
        "MODEL.DEVICE",
        "cpu",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    ]
    assert detect.main([*voc, "DATASETS.ROOT", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path}/nowhere/VOC2007/Annotations does not exist" in capsys.readouterr().err
    assert detect.main([*voc, "SOLVER.MAX_ITERS", "5"]) == 2
    assert "Non-existent key: SOLVER.MAX_ITERS" in capsys.readouterr().err


def test_sigterm_checkpoints_and_resume_continues(workdir, monkeypatch):
    """SIGTERM mid-training: detect saves model_<iter>.pth through the trainer's checkpointer,
    exits 143, and --resume starts at the next iteration and finishes."""
    out = workdir / "preempted"
    opts = [*TINY, "MODEL.WEIGHTS", str(workdir / "r18.pkl"), "DATASETS.SHAPES.ROOT",
            str(workdir / "cache"), "OUTPUT_DIR", str(out)]  # fmt: skip
    config = ["--config-file", str(CONFIGS / "shapes_voc_R_18_C4.yaml")]
    after_step = PreemptionHook.after_step

    def signal_after_iteration_5(hook):
        if hook.trainer.iter == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        after_step(hook)

    with monkeypatch.context() as patch:
        patch.setattr(PreemptionHook, "after_step", signal_after_iteration_5)
        assert detect.main([*config, *opts]) == 128 + signal.SIGTERM
    log = (out / "log.txt").read_text()
    assert f"stopped by SIGTERM after iteration 5: checkpoint {out}/model_0000004.pth" in log
    assert torch.load(out / "model_0000004.pth", weights_only=True)["iteration"] == 4
    assert (out / "last_checkpoint").read_text().strip() == "model_0000004.pth"
    assert not (out / "final_metrics.json").exists()

    assert detect.main([*config, "--resume", *opts]) == 0
    assert "Starting training from iteration 5" in (out / "log.txt").read_text()
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 19
