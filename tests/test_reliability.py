"""Reliability of pretraining: preemption by a real signal, checkpoint fallback, the output-dir
lock, non-finite losses and a folder of every kind of bad image."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DEVICES
from test_datasets import rgb, write_bad_files, write_image_kinds

from unimoco.cli import main as cli_main
from unimoco.pretrain.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resume_checkpoint,
    save_checkpoint,
)
from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.engine.run_lock import RunLock, RunLockError
from unimoco.pretrain.engine.step_guard import NonFiniteLossError
from unimoco.pretrain.engine.trainer import PretrainTrainer
from unimoco.pretrain.eval.resume import EpochCheckpoint

# 16 px crops of 96 shapes images, batch 16: 6 steps per epoch, about a second a step.
TINY = [
    "DATA.NAME", "shapes",
    "DATA.SHAPES.NUM_TRAIN", "96",
    "DATA.SHAPES.IMAGE_SIZE", "24",
    "INPUT.SIZE", "16",
    "MODEL.ARCH", "resnet18",
    "MOCO.K", "32",
    "MOCO.M", "0.99",
    "MOCO.BN_SPLITS", "2",
    "SOLVER.BATCH_SIZE", "16",
    "DATA.NUM_WORKERS", "0",
    "DATA.LABEL_RATIO", "0.5",
    "LOG.PERIOD", "1",
    "LOG.TENSORBOARD", "False",
    "LOG.PROGRESS", "off",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def unimoco_log(caplog):
    """Records of the ``unimoco`` logger, which does not propagate to the root logger."""
    logger = logging.getLogger("unimoco")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="unimoco")
    yield caplog
    logger.removeHandler(caplog.handler)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], dict):
            assert_same_tensors(a[name], b[name])
        elif isinstance(a[name], torch.Tensor):
            assert torch.equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_sigterm_checkpoints_and_resume_equals_uninterrupted_run(tmp_path):
    """A real process gets SIGTERM (sent to its whole process group, workers included, as a
    scheduler does) mid-epoch: it checkpoints at the next step boundary and exits 143; resuming
    gives weights, queues and optimizer state bit-identical to an uninterrupted run."""
    opts = TINY + ["SOLVER.EPOCHS", "1"]
    full = tmp_path / "full"
    assert cli_main(["pretrain", *opts, "OUTPUT_DIR", str(full)]) == 0

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "unimoco.cli", "pretrain", *opts, "OUTPUT_DIR", str(run),
           "DATA.NUM_WORKERS", "1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log = run / "log.txt"
    _wait_for(lambda: log.is_file() and "step 2/6" in log.read_text(), 240, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    stopped = re.search(r"stopped by SIGTERM at step (\d+): checkpoint (\S+) written; run again "
                        r"with --resume", output)  # fmt: skip
    assert stopped, output
    step = int(stopped.group(1))
    assert 2 <= step < 6 and stopped.group(2) == str(run / "checkpoint_last.pth")
    assert load_checkpoint(run / "checkpoint_last.pth")["step"] == step
    assert not (run / "pretrain.lock").exists()

    assert cli_main(["pretrain", "--resume", *opts, "OUTPUT_DIR", str(run)]) == 0
    assert f"resume: {run / 'checkpoint_last.pth'} at epoch" in log.read_text()
    a, b = (load_checkpoint(d / "checkpoint_last.pth") for d in (full, run))
    assert a["step"] == b["step"] == 6
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["optimizer"], b["optimizer"])
    assert_same_tensors(a["rng"], b["rng"])


def test_previous_checkpoint_is_kept_and_used_when_the_last_is_corrupt(tmp_path, unimoco_log):
    last, prev = tmp_path / "checkpoint_last.pth", tmp_path / "checkpoint_prev.pth"
    for step in (1, 2, 3):
        save_checkpoint({"step": step, "w": torch.full((100,), step)}, last, prev)
    assert load_checkpoint(prev)["step"] == 2 and load_checkpoint(last)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [last.name, prev.name]

    last.write_bytes(last.read_bytes()[:300])  # truncated, e.g. by a full disk or a bad copy
    path, state = load_resume_checkpoint(tmp_path)
    assert path == prev and state["step"] == 2
    assert re.search(r"resume: \S+checkpoint_last.pth is truncated or corrupt: .*; falling back",
                     unimoco_log.text)  # fmt: skip
    prev.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*last.*prev"):
        load_resume_checkpoint(tmp_path)
    assert load_resume_checkpoint(tmp_path / "empty") is None


def _nan_at(trainer: PretrainTrainer, steps: set[int], before_after: list) -> None:
    """Poison the query crops of the given (0-based) steps with NaN, recording the whole
    training state around the first of them."""
    step_fn = trainer.train_step

    def poisoned(images, labels):
        index = trainer.state.step
        if index not in steps:
            return step_fn(images, labels)
        images = [torch.full_like(images[0], float("nan")), images[1]]
        if not before_after:
            before_after.append(_clone_state(trainer))
            losses = step_fn(images, labels)
            before_after.append(_clone_state(trainer))
            return losses
        return step_fn(images, labels)

    trainer.train_step = poisoned


def _clone_state(trainer: PretrainTrainer) -> dict:
    return {
        "model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": {
            i: {k: v.clone() for k, v in s.items()}
            for i, s in trainer.optimizer.state_dict()["state"].items()
        },
    }


@pytest.mark.parametrize("device", DEVICES)
def test_nonfinite_steps_are_skipped_then_stop_the_run(device, tmp_path, unimoco_log):
    """NaN crops: the step changes nothing (weights, BN statistics, key encoder, queue,
    optimizer) and is counted; MAX_NONFINITE in a row stop the run with the checkpoints intact,
    and a truncated last checkpoint falls back to the one before. On CUDA the flags reach the
    host through pinned memory and an event, and bf16 autocast is on."""
    out = tmp_path / "run"
    opts = TINY + ["SOLVER.EPOCHS", "2", "CHECKPOINT.PERIOD_STEPS", "4",
                   "SOLVER.MAX_NONFINITE", "3", "OUTPUT_DIR", str(out)]  # fmt: skip
    trainer = PretrainTrainer(load_cfg(None, opts), torch.device(device))
    around: list = []
    _nan_at(trainer, {2, 6, 7, 8}, around)
    with pytest.raises(
        NonFiniteLossError, match=r"step 9: .* 3 in a row, SOLVER.MAX_NONFINITE = 3"
    ):
        trainer.train()
    before, after = around
    assert before["model"]["encoder_q.bn1.running_mean"].isfinite().all()
    assert_same_tensors(before, after)
    assert trainer.state.step == 8 and trainer.state.nonfinite_steps == 3
    assert "step 3: non-finite loss" in unimoco_log.text and "step skipped" in unimoco_log.text
    counted = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in counted if "nonfinite_steps" in m] == [3, 7, 8]
    assert [m["step"] for m in counted if "loss" in m] == [1, 2, 4, 5, 6]

    # Checkpoints at steps 6 (epoch end) and 8 (periodic, inside the NaN streak): the skipped
    # steps 7 and 8 left every tensor as it was.
    last, prev = (load_checkpoint(out / f"checkpoint_{n}.pth") for n in ("last", "prev"))
    assert (last["step"], prev["step"], last["nonfinite_steps"]) == (8, 6, 3)
    assert_same_tensors(last["model"], prev["model"])
    assert_same_tensors(last["optimizer"]["state"], prev["optimizer"]["state"])
    assert all(t.isfinite().all() for t in last["model"].values() if t.is_floating_point())

    (out / "checkpoint_last.pth").write_bytes(b"PK\x03\x04 cut short")
    resumed = PretrainTrainer(load_cfg(None, opts), torch.device(device))
    assert resumed.resume() and resumed.state.step == 6
    assert "falling back to the previous checkpoint" in unimoco_log.text


HOLDER = (
    "import sys; from unimoco.pretrain.engine.run_lock import RunLock; "
    "RunLock(sys.argv[1], 'pretrain.lock').acquire(); print('locked', flush=True); "
    "sys.stdin.read()"
)


def test_output_dir_lock(tmp_path, capsys, unimoco_log):
    """A live owner (another process) is named and the run refused; after the owner is killed
    with SIGKILL its lock is taken over with a warning; release removes the file."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        owner = f"pid {holder.pid} on host {socket.gethostname()}"
        with pytest.raises(RunLockError, match=f"in use by another run: {owner}"):
            RunLock(tmp_path, "pretrain.lock").acquire()
        assert cli_main(["pretrain", *TINY, "OUTPUT_DIR", str(tmp_path)]) == 2
        assert owner in capsys.readouterr().err
        assert not (tmp_path / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path, "pretrain.lock") as lock:
        assert f"taking over the lock of {owner}, which is no longer running" in unimoco_log.text
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def _folder_run(root: Path, out: Path, *overrides: str) -> list[str]:
    """One epoch of a tiny R18 on the image folder ``root``, in one process."""
    return ["DATA.ROOT", str(root), "OUTPUT_DIR", str(out), "INPUT.SIZE", "16",
            "MODEL.ARCH", "resnet18", "MOCO.K", "8", "MOCO.BN_SPLITS", "2",
            "SOLVER.BATCH_SIZE", "8", "SOLVER.EPOCHS", "1", "DATA.NUM_WORKERS", "0",
            "LOG.TENSORBOARD", "False", "LOG.PROGRESS", "off", *overrides]  # fmt: skip


def test_folder_of_bad_images_trains_with_the_bad_ones_named(tmp_path):
    """Every image kind (grey, RGBA, CMYK, 16-bit, palette, ...) is converted; empty, garbage,
    truncated and oversized files are skipped, counted and named in the log; the run completes."""
    root = tmp_path / "images"
    write_image_kinds(root)  # 9 files
    write_bad_files(root / "bad")  # 5 files
    (root / "good").mkdir()
    for i in range(18):  # 32 images in all: 4 full batches, so every file is read
        rgb(100 + i).save(root / "good" / f"{i}.png")
    out = tmp_path / "run"
    assert cli_main(["pretrain", *_folder_run(root, out, "DATA.MAX_BAD_FRACTION", "0.7")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["bad_images"] == 5
    skipped = set(re.findall(r"cannot decode \S+/(\S+) \(", (out / "log.txt").read_text()))
    assert skipped == {"empty.jpg", "garbage.png", "truncated.jpg", "truncated.png", "huge.png"}


def test_too_many_bad_images_stop_the_run_with_a_clear_error(tmp_path):
    """Past DATA.MAX_BAD_FRACTION the run stops with status 2 before any checkpoint, and the
    message says how many failed and where the files are named."""
    root = tmp_path / "images"
    write_bad_files(root / "bad")  # 5 files
    (root / "good").mkdir()
    for i in range(11):
        rgb(200 + i).save(root / "good" / f"{i}.png")
    out = tmp_path / "run"
    opts = _folder_run(root, out, "DATA.MAX_BAD_FRACTION", "0.1")
    assert cli_main(["pretrain", *opts]) == 2
    log = (out / "log.txt").read_text()
    match = re.search(r"(\d+) of (\d+) images failed to decode, more than "
                      r"DATA.MAX_BAD_FRACTION = 0.1: (.*); the 'cannot decode' warnings above "
                      r"and in (\S+) name every one", log)  # fmt: skip
    assert match and match[4] == str(out / "log.txt")
    assert int(match[1]) > 0.1 * int(match[2])
    named = match[3].removesuffix(" ...").split(", ")
    assert 0 < len(named) <= 5 and all(Path(name).parent == root / "bad" for name in named)
    assert len(re.findall(r"cannot decode \S+/bad/", log)) >= int(match[1])
    assert not list(out.glob("checkpoint_*.pth"))


DIGITS_8 = [
    "DATA.NAME", "digits", "DATA.DIGITS.SIZE", "8", "INPUT.SIZE", "8", "MODEL.ARCH", "resnet18",
    "DATA.NUM_WORKERS", "0", "EVAL.BATCH_SIZE", "512", "LOG.TENSORBOARD", "False",
    "LINCLS.EPOCHS", "2", "LINCLS.BATCH_SIZE", "512",
    "SEMISUP.EPOCHS", "2", "SEMISUP.BATCH_SIZE", "64",
]  # fmt: skip


@pytest.mark.parametrize("command", ["lincls", "semisup"])
def test_evaluation_stops_on_sigterm_and_resumes_exactly(command, tmp_path, monkeypatch):
    """SIGTERM during epoch 2: the command exits 143 naming the epoch checkpoint; --resume
    repeats epoch 2 and ends with the state and accuracy of an uninterrupted run."""
    full, run = tmp_path / "full", tmp_path / "run"
    assert cli_main([command, "--random-init", *DIGITS_8, "OUTPUT_DIR", str(full)]) == 0
    end_epoch = EpochCheckpoint.end_epoch

    def end_then_signal(self, epoch, modules):
        end_epoch(self, epoch, modules)
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(EpochCheckpoint, "end_epoch", end_then_signal)
        code = cli_main([command, "--random-init", *DIGITS_8, "OUTPUT_DIR", str(run)])
    assert code == 128 + signal.SIGTERM
    log = (run / "log.txt").read_text()
    assert f"stopped by SIGTERM in epoch 2; last completed epoch: {run}/{command}_last.pth" in log
    assert load_checkpoint(run / f"{command}_last.pth")["epoch"] == 1
    assert not (run / f"{command}_metrics.json").exists()
    assert not (run / f"{command}.lock").exists()

    args = [command, "--random-init", "--resume", *DIGITS_8, "OUTPUT_DIR", str(run)]
    assert cli_main(args) == 0
    a, b = (load_checkpoint(d / f"{command}_last.pth") for d in (full, run))
    assert a["epoch"] == b["epoch"] == 2
    assert_same_tensors(a["state"], b["state"])
    metrics = [json.loads((d / f"{command}_metrics.json").read_text()) for d in (full, run)]
    assert metrics[0]["top1"] == metrics[1]["top1"]
