"""``unimoco bench`` on the CPU with tiny settings: it runs in seconds and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unimoco.cli import main as cli_main
from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.engine.bench import (
    BenchTrainer,
    bench_cfg,
    format_report,
    run_bench,
    synthetic_batch,
)
from unimoco.pretrain.engine.flops import encoder_macs

TINY = [
    "MODEL.ARCH", "resnet18",
    "INPUT.SIZE", "32",
    "SOLVER.BATCH_SIZE", "8",
    "MOCO.K", "16",
    "MOCO.BN_SPLITS", "2",
    "DATA.NUM_WORKERS", "0",
    "DATA.LABEL_RATIO", "0.5",
    "BENCH.NUM_IMAGES", "24",
    "BENCH.IMAGE_SIZE", "40",
    "BENCH.WARMUP_STEPS", "1",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_command_writes_its_json(tmp_path, capsys):
    """The GPU data path on CPU tensors, timed on a generated JPEG folder: every phase has its
    img/s, the end-to-end phase its data wait, memory is the process RSS, no MFU without a peak,
    and the profiled step has no host synchronisation."""
    out, trace = tmp_path / "bench.json", tmp_path / "trace.json"
    argv = ["bench", "--steps", "2", "--out", str(out), "--trace", str(trace), *TINY]
    assert cli_main([*argv, "DATA.PIPELINE", "gpu"]) == 0
    result = json.loads(out.read_text())
    for phase in ("data", "step", "end_to_end"):
        assert result[phase]["img_per_s"] > 0 and result[phase]["seconds"] > 0
    assert 0 <= result["end_to_end"]["data_wait_fraction"] <= 1
    assert result["end_to_end"]["bad_images"] == 0
    assert result["step"]["peak_memory_gib"] > 0 and result["memory"] == "process peak RSS"
    assert result["peak_tflops"] is None and result["step"]["mfu"] is None
    cfg = load_cfg(None, TINY)
    assert result["flops_per_image"] == 2 * 4 * encoder_macs(cfg)
    settings = result["settings"]
    assert settings["pipeline"] == "gpu" and settings["arch"] == "resnet18"
    assert settings["images"] == 24 and settings["data_root"].endswith("-jpeg/train")
    assert result["host_syncs_per_step"] == {}
    assert json.loads(trace.read_text())["traceEvents"]
    assert "end-to-end" in capsys.readouterr().out


def test_bench_reports_mfu_against_a_given_peak():
    """With BENCH.PEAK_TFLOPS the utilisation is flops per image x img/s / peak (CPU path)."""
    cfg = load_cfg(None, [*TINY, "BENCH.PEAK_TFLOPS", "0.5"])
    result = run_bench(cfg, torch.device("cpu"), steps=1)
    assert result["settings"]["pipeline"] == "cpu" and result["host_syncs_per_step"] is None
    for phase in ("step", "end_to_end"):
        expected = result["flops_per_image"] * result[phase]["img_per_s"] / 0.5e12
        assert result[phase]["mfu"] == pytest.approx(expected)
    assert "MFU" in format_report(result)


@pytest.mark.parametrize(
    "argv", [["--steps", "0"], ["BENCH.PEAK_TFLOPS", "-1"], ["BENCH.NUM_IMAGES", "5"]]
)
def test_bench_rejects_bad_settings(argv, capsys):
    assert cli_main(["bench", *argv]) == 2
    assert "unimoco bench:" in capsys.readouterr().err


def _table_rows(table: str) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}


def test_throughput_suite_runs_its_variants_and_tabulates_them(tmp_path):
    """benchmarks/throughput.sh (CPU-sized): one JSON per variant and a table of their numbers;
    a second run skips finished variants and reports a failing one instead of stopping."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.sh"
    env = {
        **os.environ,
        "TINY": "1",
        "STEPS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHON": sys.executable,
        "VARIANTS": "cpu_path gpu_path",
    }
    out = tmp_path / "suite"
    subprocess.run(["bash", str(script), str(out)], env=env, check=True, timeout=600)
    rows = _table_rows((out / "table.md").read_text())
    for variant, label in (("cpu_path", "CPU data path"), ("gpu_path", "GPU data path")):
        result = json.loads((out / f"{variant}.json").read_text())
        assert result["settings"]["pipeline"] == variant.split("_")[0]
        row = next(cells for name, cells in rows.items() if name.startswith(label))
        step, end_to_end = result["step"]["img_per_s"], result["end_to_end"]["img_per_s"]
        assert row[1:4] == [f"{step:,.0f}", f"{end_to_end:,.0f}", f"{end_to_end / step:.2f}"]

    finished = (out / "gpu_path.json").stat().st_mtime_ns
    env["VARIANTS"] = "gpu_path gpu_compiled"
    subprocess.run(["bash", str(script), str(out), "NO.SUCH_KEY", "1"], env=env, check=True)
    assert (out / "gpu_path.json").stat().st_mtime_ns == finished
    rows = _table_rows((out / "table.md").read_text())
    assert rows["GPU data path + torch.compile"][0] == "no result (exit status 2)"
    assert "NO.SUCH_KEY" in (out / "gpu_compiled.log").read_text()


@pytest.mark.parametrize("guarded", [True, False])
def test_bench_step_guard_switch(guarded, tmp_path):
    """BENCH.STEP_GUARD False times the step without the guard's snapshot and finite check."""
    cfg = bench_cfg(load_cfg(None, [*TINY, "BENCH.STEP_GUARD", str(guarded)]), str(tmp_path))
    trainer = BenchTrainer(cfg, torch.device("cpu"))
    views, labels = synthetic_batch(trainer)
    with torch.profiler.profile() as prof:
        trainer.train_step(views, labels)
    ops = {event.key for event in prof.key_averages()}
    assert ("aten::_foreach_copy_" in ops) == guarded
    assert ("aten::isfinite" in ops) == guarded
    assert "aten::_foreach_add_" in ops  # the momentum update runs either way


def test_throughput_table_states_the_goal_ratios(tmp_path):
    """End to end over the compiled step, and the extra time per image of the label queue and
    of the guard, computed from the variants' img/s."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput_table.py"
    spec = importlib.util.spec_from_file_location("throughput_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rates = {"gpu_compiled": (4000, 3600), "gpu_compiled_infonce": (4080, 3636),
             "gpu_compiled_noguard": (4000, 3708)}  # fmt: skip
    for variant, (step, end_to_end) in rates.items():
        phases = {
            "data": {"img_per_s": 20000.0},
            "step": {"img_per_s": step, "peak_memory_gib": 14.0, "mfu": 0.13},
            "end_to_end": {"img_per_s": end_to_end, "peak_memory_gib": 14.5, "mfu": 0.12,
                           "data_wait_fraction": 0.01},
        }  # fmt: skip
        settings = {"arch": "resnet50", "input_size": 224, "batch_per_process": 256,
                    "processes": 1, "queue": 65536, "label_ratio": 0.1, "images": 8000,
                    "data_root": "/data", "steps": 30}  # fmt: skip
        syncs = {"cudaEventSynchronize": 1.0}
        result = {**phases, "host_syncs_per_step": syncs, "settings": settings,
                  "device": "GPU", "torch": "2.11", "date": "today"}  # fmt: skip
        (tmp_path / f"{variant}.json").write_text(json.dumps(result))
    text = module.table(tmp_path, ["gpu_path", *rates])
    assert text.startswith("GPU, torch 2.11, resnet50 224 px, batch 256 x 1, queue 65536")
    assert "| GPU data path | no result (not run) |" in text
    assert (
        "| 20,000 | 4,000 | 3,600 | 0.90 | 1 % | 14.50 | 12.0 % | cudaEventSynchronize 1 |" in text
    )
    assert "end to end / compiled model step alone: 90.0 %" in text
    assert "label queue + UniCon over InfoNCE, step: +2.0 % time per image" in text
    assert "label queue + UniCon over InfoNCE, end to end: +1.0 % time per image" in text
    assert "non-finite guard (one host sync per step), end to end: +3.0 % time per image" in text
