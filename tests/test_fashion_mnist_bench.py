"""benchmarks/fashion_mnist.sh and its table: every kind of row runs on tiny IDX files, resumes,
and the table reports what the runs wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_fashion_mnist import make_fashion_root

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "DATA.NUM_WORKERS", "0", "DATA.FASHION_MNIST.NUM_TRAIN", "0",
    "DATA.FASHION_MNIST.NUM_TEST", "0", "INPUT.SIZE", "12", "MOCO.K", "16", "MOCO.BN_SPLITS", "2",
    "SOLVER.BATCH_SIZE", "8", "SOLVER.EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "0",
    "LOG.TENSORBOARD", "False", "EVAL.BATCH_SIZE", "16", "LINCLS.EPOCHS", "2",
    "SEMISUP.BATCH_SIZE", "8",
]  # fmt: skip


def load_table(name: str = "fashion_mnist_table"):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        path = REPO / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def script_env(**extra: str) -> dict[str, str]:
    """The environment a benchmark script runs in from the tests: this Python, its unimoco."""
    return {
        **os.environ,
        "PY": sys.executable,
        "UNIMOCO": str(Path(sys.executable).parent / "unimoco"),
        "OMP_NUM_THREADS": "2",
        **extra,
    }


def write_run(run: Path, knn20: float, knn200: float, linear: float) -> None:
    """The three metric files benchmarks/fashion_mnist.sh writes for one evaluated run."""
    (run / "k20").mkdir(parents=True)
    (run / "k20" / "knn_metrics.json").write_text(json.dumps({"top1": knn20}))
    (run / "knn_metrics.json").write_text(json.dumps({"top1": knn200}))
    (run / "lincls_metrics.json").write_text(json.dumps({"top1": linear}))


def test_table_reports_mean_and_std_per_method(tmp_path, capsys):
    for seed, values in enumerate([(80.0, 78.0, 82.0), (82.0, 80.0, 84.0)]):
        write_run(tmp_path / "moco_v2" / f"seed{seed}", *values)
    ce = tmp_path / "supervised_ce" / "seed0"
    ce.mkdir(parents=True)
    (ce / "semisup_metrics.json").write_text(json.dumps({"top1": 88.5}))
    ce_knn = tmp_path / "supervised_ce" / "seed1"
    write_run(ce_knn, 86.0, 84.0, 0.0)
    (ce_knn / "semisup_metrics.json").write_text(json.dumps({"top1": 87.5}))
    (tmp_path / "raw_pixels").mkdir()
    raw = {"knn20_top1": 75.0, "knn200_top1": 72.5, "linear_top1": 79.25}
    (tmp_path / "raw_pixels" / "metrics.json").write_text(json.dumps(raw))
    load_table().main(tmp_path)
    text = capsys.readouterr().out
    assert "| MoCo v2 | 2 | 81.00 ± 1.41 | 79.00 ± 1.41 | 83.00 ± 1.41 |" in text
    # Its linear column is its own classifier (not a probe), its kNN columns its backbone's.
    assert "| cross-entropy, 100 % labels | 2 | 86.00 | 84.00 | 88.00 ± 0.71 |" in text
    assert "| raw pixels | – | 75.00 | 72.50 | 79.25 |" in text
    assert "| UniMoCo, 30 % labels | 0 | – | – | – |" in text


def test_curves_read_the_monitor_rows_and_plot_them(tmp_path):
    curves = load_table("fashion_mnist_curves")
    run = tmp_path / "moco_v2" / "seed0"
    run.mkdir(parents=True)
    rows = [
        {"step": 10, "loss": 5.0},
        {"step": 20, "knn_top1": 61.5},
        {"step": 40, "knn_top1": 70.0},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert curves.monitor(run) == ([20, 40], [61.5, 70.0])
    (tmp_path / "random_init" / "seed0" / "k20").mkdir(parents=True)
    (tmp_path / "random_init" / "seed0" / "k20" / "knn_metrics.json").write_text('{"top1": 65}')
    png = curves.plot(tmp_path, tmp_path / "curves.png")
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_benchmark_script_runs_every_kind_of_row_and_resumes(tmp_path):
    make_fashion_root(tmp_path / "fm")
    out = tmp_path / "bench"
    env = script_env(
        SEEDS="0",
        METHODS="raw_pixels random_init unimoco_30pct_co2 supervised_ce",
        PRETRAIN_OPTS="EVAL.KNN_PERIOD 1 EVAL.KNN_K 5",
    )
    command = ["bash", "benchmarks/fashion_mnist.sh", str(out), "DATA.ROOT", str(tmp_path / "fm")]
    done = subprocess.run(
        [*command, *TINY], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = out / "unimoco_30pct_co2" / "seed0"
    config = (run / "config.yaml").read_text()
    assert "LABEL_RATIO: 0.3" in config and "NAME: unicon" in config
    assert "ENABLED: true" in config
    for path in ("knn_metrics.json", "k20/knn_metrics.json", "lincls_metrics.json"):
        assert (run / path).is_file() and (out / "random_init" / "seed0" / path).is_file()
    assert json.loads((run / "k20" / "knn_metrics.json").read_text())["num_train"] == 60
    assert "SYMMETRIC: true" in config
    # PRETRAIN_OPTS reach the pretraining (a monitor row per epoch) and nothing else.
    assert "KNN_PERIOD: 1" in config and "KNN_K: 5" in config
    history = (run / "metrics.jsonl").read_text()
    assert history.count('"knn_top1"') == 2
    assert "KNN_K: 5" not in (out / "random_init" / "seed0" / "knn_config.yaml").read_text()
    ce = out / "supervised_ce" / "seed0"
    assert (ce / "semisup_metrics.json").is_file()
    # The trained network's backbone gets the same kNN as the pretrained ones.
    for path in ("knn_metrics.json", "k20/knn_metrics.json"):
        knn = json.loads((ce / path).read_text())
        assert knn["source_format"] == "semisup" and knn["checkpoint"].endswith("semisup_last.pth")
    # As many crops through the network as the symmetric pretraining's query encoder: 2 x 2 epochs.
    ce_config = yaml.safe_load((ce / "semisup_config.yaml").read_text())
    assert ce_config["SEMISUP"]["EPOCHS"] == 4 and ce_config["SEMISUP"]["BACKBONE_LR"] == 0.03
    assert "| UniMoCo, 30 % labels | 0 |" in done.stdout  # the table ends the run
    raw = json.loads((out / "raw_pixels" / "metrics.json").read_text())
    assert raw["num_train"] == 60 and raw["num_val"] == 30 and 0 <= raw["linear_top1"] <= 100
    before = (run / "checkpoint_final.pth").stat().st_mtime_ns
    again = subprocess.run(
        [*command, *TINY], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and (run / "checkpoint_final.pth").stat().st_mtime_ns == before


def test_co2_sweep_table_has_one_row_per_setting_sorted_under_moco(tmp_path, capsys):
    write_run(tmp_path / "moco_v2" / "seed0", 79.5, 76.5, 81.9)
    write_run(tmp_path / "co2_a10.0_t0.05" / "moco_v2_co2" / "seed0", 70.0, 60.0, 75.0)
    for seed, linear in enumerate([83.8, 82.8]):
        write_run(tmp_path / "co2_a0.1_t1.0" / "moco_v2_co2" / f"seed{seed}", 79.0, 75.0, linear)
    (tmp_path / "co2_notes").mkdir()  # not a setting: ignored
    load_table("fashion_mnist_co2_table").main(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| MoCo v2, no CO2 | 1 | 79.50 | 76.50 | 81.90 |"
    assert lines[3] == "| CO2 α 0.1, τc 1 | 2 | 79.00 ± 0.00 | 75.00 ± 0.00 | 83.30 ± 0.71 |"
    assert lines[4] == "| CO2 α 10, τc 0.05 | 1 | 70.00 | 60.00 | 75.00 |"
    assert len(lines) == 5


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_co2_sweep_script_passes_each_setting_to_its_pretraining(tmp_path):
    make_fashion_root(tmp_path / "fm")
    out = tmp_path / "sweep"
    env = script_env(ALPHAS="0.5", TAUS="0.3 2.0")
    command = ["bash", "benchmarks/fashion_mnist_co2_sweep.sh", str(out)]
    done = subprocess.run(
        [*command, "DATA.ROOT", str(tmp_path / "fm"), *TINY],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for tau in ("0.3", "2.0"):
        config = yaml.safe_load(
            (out / f"co2_a0.5_t{tau}/moco_v2_co2/seed0/config.yaml").read_text()
        )
        assert config["CO2"] == {"ENABLED": True, "ALPHA": 0.5, "T": float(tau)}
        assert config["LOSS"]["NAME"] == "infonce"
    assert (
        yaml.safe_load((out / "moco_v2/seed0/config.yaml").read_text())["CO2"]["ENABLED"] is False
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| MoCo v2, no CO2",
        "| CO2 α 0.5, τc 0.3",
        "| CO2 α 0.5, τc 2",
    ]
    assert all(r.split(" | ")[1] == "1" for r in rows[1:])
