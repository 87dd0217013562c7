"""Config loading (files, _BASE_, overrides, errors), lr schedules, atomic checkpoints."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from unimoco.pretrain.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from unimoco.pretrain.config import ConfigError, get_cfg, load_cfg
from unimoco.pretrain.engine.optim import build_optimizer
from unimoco.pretrain.engine.schedule import build_lr_schedule

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pretrain"


def test_defaults_are_moco_v2():
    cfg = get_cfg()
    assert (cfg.MOCO.K, cfg.MOCO.M, cfg.MOCO.T, cfg.MODEL.DIM) == (65536, 0.999, 0.2, 128)
    assert (cfg.MODEL.HEAD, cfg.INPUT.AUG, cfg.SOLVER.SCHEDULE) == ("mlp", "v2", "cosine")
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY) == (0.03, 0.9, 1e-4)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_pretrain_config_loads(path):
    cfg = load_cfg(str(path))
    assert cfg.OUTPUT_DIR


def test_base_inheritance_and_label_ratios():
    v1 = load_cfg(str(CONFIGS / "moco_v1_r50_200ep.yaml"))
    assert (v1.MOCO.T, v1.MODEL.HEAD, v1.SOLVER.STEPS, v1.LOSS.NAME) == (
        0.07,
        "fc",
        (120, 160),
        "infonce",
    )
    assert v1.MODEL.ARCH == "resnet50"  # from the base file
    for pct in (0, 10, 30, 60, 100):
        cfg = load_cfg(str(CONFIGS / f"unimoco_r50_{pct}pct_800ep.yaml"))
        assert cfg.DATA.LABEL_RATIO == pytest.approx(pct / 100)
        assert cfg.SOLVER.EPOCHS == 800


def test_overrides_and_their_errors(tmp_path):
    cfg = load_cfg(None, ["MOCO.K", "4096", "MODEL.ARCH", "resnet18", "SOLVER.STEPS", "(3, 4)"])
    assert (cfg.MOCO.K, cfg.MODEL.ARCH, cfg.SOLVER.STEPS) == (4096, "resnet18", (3, 4))
    with pytest.raises(ConfigError, match="MOCO.KK"):
        load_cfg(None, ["MOCO.KK", "1"])
    with pytest.raises(ConfigError, match="odd number"):
        load_cfg(None, ["MOCO.K"])
    with pytest.raises(ConfigError, match="MODEL.ARCH = 'vit'"):
        load_cfg(None, ["MODEL.ARCH", "vit"])
    with pytest.raises(ConfigError, match="LABEL_RATIO"):
        load_cfg(None, ["DATA.LABEL_RATIO", "1.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  EPOCS: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*SOLVER\.EPOCS"):
        load_cfg(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_cfg(str(tmp_path / "missing.yaml"))


def test_optimizer_choice_and_its_hyperparameters():
    params = [torch.nn.Parameter(torch.ones(3))]
    sgd = build_optimizer(load_cfg(None, ["SOLVER.MOMENTUM", "0.8"]), params, lr=0.5)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.8 and sgd.defaults["weight_decay"] == 1e-4
    cfg = load_cfg(None, ["SOLVER.OPTIMIZER", "adamw", "SOLVER.WEIGHT_DECAY", "0.05"])
    adamw = build_optimizer(cfg, params, lr=0.001)
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == (0.001, 0.05)
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER = 'lars'"):
        load_cfg(None, ["SOLVER.OPTIMIZER", "lars"])


def test_step_schedule_with_warmup_steps_at_the_right_epochs():
    cfg = load_cfg(
        None,
        [
            "SOLVER.SCHEDULE",
            "step",
            "SOLVER.EPOCHS",
            "20",
            "SOLVER.STEPS",
            "(12, 16)",
            "SOLVER.WARMUP_EPOCHS",
            "2",
        ],
    )
    steps_per_epoch = 5
    total = 20 * steps_per_epoch
    lr = [build_lr_schedule(cfg, steps_per_epoch)(s / total) for s in range(total)]
    assert lr[0] < 0.01 and lr[5] == pytest.approx(0.5, abs=0.02)
    assert lr[10] == lr[59] == 1.0
    assert lr[60] == pytest.approx(0.1) and lr[79] == pytest.approx(0.1)
    assert lr[80] == pytest.approx(0.01) and lr[99] == pytest.approx(0.01)


def test_cosine_schedule_endpoints():
    cfg = load_cfg(None, ["SOLVER.EPOCHS", "10"])
    schedule = build_lr_schedule(cfg, 3)
    assert schedule(0.0) == 1.0 and schedule(0.5) == pytest.approx(0.5) and schedule(0.999) < 1e-4


def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    path = tmp_path / "ckpt.pth"
    state = {"model": {"w": torch.arange(4.0)}, "step": 3, "cfg": "A: 1\n"}
    save_checkpoint(state, path)
    save_checkpoint({**state, "step": 4}, path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 4 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temporary files left


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(_Payload.target),))


def test_pickle_that_runs_code_is_refused(tmp_path):
    _Payload.target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": _Payload()}, f)
    assert not _Payload.target.exists()
    with pytest.raises(CheckpointError, match="not a plain-data checkpoint"):
        load_checkpoint(path)
    assert not _Payload.target.exists()
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)
    assert not _Payload.target.exists()


def test_a_flipped_bit_in_tensor_data_is_caught(tmp_path):
    """torch.load alone would load the changed weight; the zip records' CRC-32s catch it."""
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"step": 1, "w": torch.zeros(10_000)}, path)
    data = bytearray(path.read_bytes())
    offset = data.index(bytes(4000))  # inside the 40 kB of zeros
    data[offset + 100] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"record \S+/data/0 fails the CRC-32 check"):
        load_checkpoint(path)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(legacy)["w"], torch.ones(3))  # no checksums to check
    unchecked = tmp_path / "no_crc.pth"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.ones(3)}, unchecked)  # every record's CRC field is 0
    finally:
        torch.serialization.set_crc32_options(True)
    assert torch.equal(load_checkpoint(unchecked)["w"], torch.ones(3))
