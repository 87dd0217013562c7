"""The wheel works on its own: built from the sources and installed into a bare folder, it lists
its built-in configs and runs the demo pipeline by name from a folder outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_readme import TINY

from unimoco import __version__

CHECKOUT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "pyproject.toml", "tools", "pretrain", "transfer", "pipeline", "configs")


def _run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (the checkout stays clean) and installed with
    ``pip install --target`` into a folder of its own; returns that folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    for name in SOURCES:
        origin = CHECKOUT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(origin, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), source])
    (wheel,) = (root / "dist").glob("unimoco-*.whl")
    assert wheel.name.startswith(f"unimoco-{__version__}-")
    _run([*pip, "install", "--no-deps", "--target", str(root / "target"), str(wheel)])
    return root / "target"


def _unimoco(target: Path, cwd: Path, *argv: str) -> str:
    """``python -m unimoco.cli ARGV`` with the installed wheel first on the path."""
    env = {**os.environ, "PYTHONPATH": str(target)}
    return _run([sys.executable, "-m", "unimoco.cli", *argv], cwd=cwd, env=env).stdout


def test_the_wheel_holds_the_configs_and_lists_them(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    code = "import unimoco, unimoco.configs as c; print(unimoco.__file__, c.ROOT)"
    where = _run([sys.executable, "-c", code], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(path).is_relative_to(installed) for path in where), where
    listing = _unimoco(installed, tmp_path, "configs")
    for name in ("pipeline/shapes_demo", "pretrain/moco_v2_r50_200ep", "detection/voc_R_50_C4_24k"):
        assert name in listing
    assert _unimoco(installed, tmp_path, "--version").strip() == f"unimoco {__version__}"


@pytest.mark.slow
def test_the_demo_pipeline_runs_by_name_from_the_wheel(installed, tmp_path):
    _unimoco(
        installed, tmp_path, "pipeline", "--config-file", "pipeline/shapes_demo",
        "OUTPUT_DIR", "out", "BASELINES", "[]", *TINY["pipeline"],
    )  # fmt: skip
    out = tmp_path / "out"
    assert (out / "report.html").is_file()
    assert f"unimoco {__version__}" in (out / "report.md").read_text()
    for written in (
        "pretrain/pretrained/metrics.json",
        "eval/pretrained/knn_metrics.json",
        "eval/pretrained/lincls_metrics.json",
        "detect/pretrained/final_metrics.json",
        "detect/pretrained/stage.json",
    ):
        assert json.loads((out / written).read_text())["unimoco_version"] == __version__, written
