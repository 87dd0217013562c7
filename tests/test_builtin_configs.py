"""Built-in configs by name: a path that exists wins, a name with or without ``.yaml`` finds the
shipped file, ``_BASE_`` and a pipeline's ``CONFIG_FILE`` take names too, an unknown value says
how to list the built-ins; ``unimoco configs`` lists them, ``unimoco --version`` and every
metrics JSON carry the version."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from unimoco import __version__
from unimoco.cli import main as cli_main
from unimoco.configs import (
    ROOT,
    UnknownConfigError,
    builtin_names,
    builtin_path,
    description,
    resolve_config_file,
)
from unimoco.pipeline.config import PipelineConfigError, load_pipeline_cfg
from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.engine.logging_utils import write_json

CHECKOUT = Path(__file__).resolve().parents[1]


def test_the_builtin_configs_are_the_checkout_configs():
    files = sorted(CHECKOUT.glob("configs/*/*.yaml"))
    assert builtin_names() == [f"{p.parent.name}/{p.stem}" for p in files]
    assert "pretrain/moco_v2_r50_200ep" in builtin_names()


@pytest.mark.parametrize("name", ["pretrain/moco_v2_r50_200ep", "pretrain/moco_v2_r50_200ep.yaml"])
def test_a_name_with_or_without_yaml_finds_the_file(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_file(name) == ROOT / "pretrain" / "moco_v2_r50_200ep.yaml"
    assert load_cfg(name) == load_cfg(str(CHECKOUT / "configs/pretrain/moco_v2_r50_200ep.yaml"))


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "moco_v2_r50_200ep.yaml").write_text("OUTPUT_DIR: mine\n")
    monkeypatch.chdir(tmp_path)
    assert load_cfg("pretrain/moco_v2_r50_200ep.yaml").OUTPUT_DIR == "mine"
    assert load_cfg("pretrain/moco_v2_r50_200ep").OUTPUT_DIR == "output/moco_v2_r50_200ep"


def test_names_outside_the_configs_are_not_builtin():
    assert builtin_path("../setup") is None
    assert builtin_path(str(ROOT / "pretrain" / "shapes_demo.yaml")) is None
    assert builtin_path("") is None


@pytest.mark.parametrize("base", ["pretrain/moco_v2_co2_r50_200ep", "[pretrain/cifar10_r18.yaml]"])
def test_base_takes_a_name(base, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f"_BASE_: {base}\nSOLVER:\n  EPOCHS: 3\n")
    cfg = load_cfg(str(config))
    assert cfg.SOLVER.EPOCHS == 3
    reference = load_cfg(str(ROOT / f"{base.strip('[]').removesuffix('.yaml')}.yaml"))
    assert cfg.OUTPUT_DIR == reference.OUTPUT_DIR and cfg.MOCO.T == reference.MOCO.T


def test_a_base_file_next_to_the_including_one_wins(tmp_path):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "shapes_demo.yaml").write_text("OUTPUT_DIR: local_base\n")
    config = tmp_path / "mine.yaml"
    config.write_text("_BASE_: pretrain/shapes_demo.yaml\n")
    assert load_cfg(str(config)).OUTPUT_DIR == "local_base"


def test_detection_config_and_base_by_name(tmp_path):
    from unimoco.transfer.config import load_detection_cfg

    by_path = load_detection_cfg(str(ROOT / "detection" / "shapes_voc_R_18_C4.yaml"))
    assert load_detection_cfg("detection/shapes_voc_R_18_C4") == by_path
    config = tmp_path / "mine.yaml"
    config.write_text("_BASE_: detection/shapes_voc_R_18_C4\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = load_detection_cfg(str(config))
    assert cfg.SOLVER.MAX_ITER == 7
    assert cfg.MODEL.ROI_HEADS.NAME == by_path.MODEL.ROI_HEADS.NAME


def test_pipeline_config_base_and_stage_files_by_name(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(
        "_BASE_: pipeline/shapes_demo\nDETECT:\n  CONFIG_FILE: detection/shapes_coco_R_18_C4\n"
    )
    cfg = load_pipeline_cfg(str(config), ["PRETRAIN.CONFIG_FILE", "pretrain/digits_r18.yaml"])
    assert cfg.PRETRAIN.CONFIG_FILE == str(ROOT / "pretrain" / "digits_r18.yaml")
    assert cfg.DETECT.CONFIG_FILE == str(ROOT / "detection" / "shapes_coco_R_18_C4.yaml")
    assert load_pipeline_cfg("pipeline/shapes_demo").DETECT.CONFIG_FILE == str(
        ROOT / "detection" / "shapes_voc_R_18_C4.yaml"
    )


def test_an_unknown_name_names_the_value_and_how_to_list(tmp_path):
    from unimoco.transfer.config import DetectionConfigError, load_detection_cfg

    for load, error in (
        (load_cfg, ConfigError),
        (load_detection_cfg, DetectionConfigError),
        (load_pipeline_cfg, PipelineConfigError),
        (resolve_config_file, UnknownConfigError),
    ):
        with pytest.raises(error, match=r"'pretrain/nope'.*'unimoco configs'"):
            load("pretrain/nope")
    config = tmp_path / "mine.yaml"
    config.write_text("_BASE_: pretrain/nope\n")
    with pytest.raises(ConfigError, match="nope"):
        load_cfg(str(config))
    with pytest.raises(PipelineConfigError, match=r"DETECT.CONFIG_FILE.*'detection/nope'"):
        load_pipeline_cfg("pipeline/shapes_demo", ["DETECT.CONFIG_FILE", "detection/nope"])


def test_unimoco_configs_lists_every_builtin_with_a_summary(capsys):
    assert cli_main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in builtin_names():
        assert description(name), name
        assert any(re.match(rf"{re.escape(name)}\s+\S", line) for line in lines), name
    assert description("pretrain/unimoco_r50_10pct_800ep") == (
        "UniMoCo, 10% of ImageNet labeled, UniCon loss, 800 epochs"
    )


def test_version_option_and_setup_read_one_version(capsys):
    assert cli_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"unimoco {__version__}"
    assert "version=_version()" in (CHECKOUT / "setup.py").read_text()


def test_metrics_json_carries_the_version(tmp_path):
    from unimoco.transfer.config import load_detection_cfg
    from unimoco.transfer.trainer import write_final_metrics

    write_json(tmp_path / "metrics.json", {"top1": 1.0})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "top1": 1.0,
        "unimoco_version": __version__,
    }
    from unimoco.transfer.datasets import register_shapes

    register_shapes(2, 2, 32, 0, tmp_path)
    cfg = load_detection_cfg("detection/shapes_voc_R_18_C4", ["OUTPUT_DIR", str(tmp_path)])
    path = write_final_metrics(cfg, {"bbox": {"AP": 1.0}})
    final = json.loads(path.read_text())
    assert final["unimoco_version"] == __version__
    assert final["headline"]["shapes_voc_test"] == {
        "task": "detection",
        "group": "bbox",
        "metric": "AP",
        "value": 1.0,
    }
