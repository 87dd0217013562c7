"""Config constraints: a bad value or combination is a ConfigError naming the key, the value and
what is valid (exit status 2), checked at load time; no config ends in a traceback."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unimoco.cli import main as cli_main
from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.config_checks import check_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _pretrain(capsys, tmp_path, *opts) -> tuple[int, str]:
    code = cli_main(["pretrain", *opts, "OUTPUT_DIR", str(tmp_path / "out")])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "opts, message",
    [
        # 8 images in 8 splits: one image per BN group (torch: "Expected more than 1 value").
        (["SOLVER.BATCH_SIZE", "8"], "MOCO.BN_SPLITS = 8 with SOLVER.BATCH_SIZE = 8"),
        (["SOLVER.BATCH_SIZE", "8", "MOCO.BN_SPLITS", "3"], "MOCO.BN_SPLITS = 3"),
        (["MODEL.DIM", "0"], "MODEL.DIM = 0; expected an embedding size >= 1"),
        (["INPUT.SIZE", "2"], "INPUT.SIZE = 2 with MODEL.CIFAR_STEM = False; expected at least 7"),
        (["MOCO.T", "0"], "MOCO.T = 0.0; expected a temperature > 0"),
    ],
)
def test_reported_configs_are_clear_errors(capsys, tmp_path, opts, message):
    code, err = _pretrain(capsys, tmp_path, *opts)
    assert code == 2
    assert err.startswith("unimoco pretrain: ") and message in err, err
    assert "Traceback" not in err and "Type mismatch" not in err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_split_bn_error_names_the_valid_splits():
    with pytest.raises(ConfigError, match=r"one of 1, 2, 4$"):
        load_cfg(None, ["SOLVER.BATCH_SIZE", "8", "MOCO.BN_SPLITS", "3"])
    load_cfg(None, ["SOLVER.BATCH_SIZE", "8", "MOCO.BN_SPLITS", "4"])
    load_cfg(None, ["SOLVER.BATCH_SIZE", "8", "MOCO.SHUFFLE_BN", "False"])  # no split BN


def test_split_bn_applies_to_one_process_only():
    """Across processes each process's batch is one BN group: BN_SPLITS is not used."""
    cfg = get_unfrozen(["SOLVER.BATCH_SIZE", "16"])
    check_config(cfg, world_size=4)  # 4 images a process, one BN group each
    cfg.SOLVER.BATCH_SIZE = 4
    with pytest.raises(ConfigError, match="expected at least 2 images per process"):
        check_config(cfg, world_size=4)
    cfg.SOLVER.BATCH_SIZE = 6
    with pytest.raises(ConfigError, match="multiple of the 4 processes"):
        check_config(cfg, world_size=4)


def get_unfrozen(opts: list[str]):
    cfg = load_cfg(None, opts)
    cfg.defrost()
    return cfg


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR = -0.1; expected a value >= 0"),
        (["SOLVER.WEIGHT_DECAY", "-1e-4"], "SOLVER.WEIGHT_DECAY"),
        (["INPUT.CROP_SCALE", "(0.6, 0.2)"], "0 < lo <= hi <= 1"),
        (["INPUT.CROP_SCALE", "(0.0, 1.0)"], "INPUT.CROP_SCALE"),
        (["LINCLS.CROP_SCALE", "(0.5, 1.5)"], "LINCLS.CROP_SCALE"),
        (["SOLVER.STEPS", "(160, 120)"], "SOLVER.STEPS = (160, 120); expected epochs >= 0 in"),
        (["SEMISUP.STEPS", "('a',)"], "SEMISUP.STEPS"),
        (["SOLVER.WARMUP_EPOCHS", "200"], "fewer than SOLVER.EPOCHS = 200"),
        (["MOCO.K", "128"], "MOCO.K = 128 with SOLVER.BATCH_SIZE = 256"),
        (["MOCO.K", "300", "LOSS.SYMMETRIC", "True"], "expected a queue of at least the 512 keys"),
        (["INPUT.SIZE", "2", "MODEL.CIFAR_STEM", "True"], "expected at least 3 px"),
        (["SEED", "-1"], "SEED = -1"),
        (["DATA.SHAPES.IMAGE_SIZE", "16"], "DATA.SHAPES.IMAGE_SIZE = 16"),
        (["SOLVER.GAMMA", "0"], "SOLVER.GAMMA = 0.0; expected a value > 0"),
        (["MODEL.ARCH", "vit"], "MODEL.ARCH = 'vit'; expected one of resnet18"),
    ],
)
def test_ranges_and_relations(opts, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_cfg(None, opts)


def test_whole_numbers_are_accepted_for_floats(tmp_path):
    cfg = load_cfg(None, ["MOCO.T", "1", "SOLVER.BASE_LR", "2", "MOCO.M", "0"])
    assert (cfg.MOCO.T, cfg.SOLVER.BASE_LR, cfg.MOCO.M) == (1.0, 2.0, 0.0)
    assert all(type(v) is float for v in (cfg.MOCO.T, cfg.SOLVER.BASE_LR, cfg.MOCO.M))
    config = tmp_path / "c.yaml"
    config.write_text("MOCO:\n  T: 1\nSOLVER:\n  BASE_LR: 3\n  EPOCHS: 2\n")
    cfg = load_cfg(str(config))
    assert type(cfg.MOCO.T) is float and cfg.SOLVER.BASE_LR == 3.0 and cfg.SOLVER.EPOCHS == 2
    with pytest.raises(ConfigError, match="Type mismatch"):
        load_cfg(None, ["SOLVER.EPOCHS", "2.5"])  # an int key still refuses a fraction


def test_detection_config_checks(tmp_path):
    pytest.importorskip("detectron2")
    from unimoco.transfer.config import DetectionConfigError, load_detection_cfg

    config = tmp_path / "d.yaml"
    config.write_text("SOLVER:\n  BASE_LR: 1\n")
    cfg = load_detection_cfg(str(config), ["SOLVER.MOMENTUM", "0"])
    assert type(cfg.SOLVER.BASE_LR) is float and cfg.SOLVER.MOMENTUM == 0.0
    with pytest.raises(DetectionConfigError, match=r"DATASETS.SHAPES.IMAGE_SIZE = 8; expected"):
        load_detection_cfg(str(config), ["DATASETS.SHAPES.IMAGE_SIZE", "8"])
    with pytest.raises(DetectionConfigError, match=r"SOLVER.STEPS = \(20, 10\)"):
        load_detection_cfg(str(config), ["SOLVER.STEPS", "(20, 10)"])


# Values in and around the valid ranges, for one pretraining step on 40 shapes images; each
# example overrides one to three keys of a valid start (TINY_DATA).
AROUND = {
    "SOLVER.BATCH_SIZE": st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16]),
    "MOCO.BN_SPLITS": st.sampled_from([0, 1, 2, 3, 4, 8]),
    "MOCO.SHUFFLE_BN": st.booleans(),
    "MOCO.K": st.sampled_from([0, 1, 4, 8, 16, 24, 40]),
    "MOCO.T": st.sampled_from([-0.1, 0, 0.05, 1]),
    "MOCO.M": st.sampled_from([0, 0.5, 0.99, 1, 1.5]),
    "MODEL.DIM": st.sampled_from([-1, 0, 1, 16]),
    "MODEL.HEAD": st.sampled_from(["fc", "mlp"]),
    "MODEL.CIFAR_STEM": st.booleans(),
    "INPUT.SIZE": st.sampled_from([0, 1, 2, 3, 6, 7, 8, 12]),
    "INPUT.AUG": st.sampled_from(["v1", "v2"]),
    "INPUT.CROP_SCALE": st.sampled_from([(0.2, 1.0), (0, 1), (0.5, 0.2), (0.5, 1.5), (0.3,)]),
    "SOLVER.BASE_LR": st.sampled_from([-0.1, 0, 0.03, 1]),
    "SOLVER.WEIGHT_DECAY": st.sampled_from([-1e-4, 0, 1e-4]),
    "SOLVER.MOMENTUM": st.sampled_from([0, 0.9, 1]),
    "SOLVER.OPTIMIZER": st.sampled_from(["sgd", "adamw"]),
    "SOLVER.SCHEDULE": st.sampled_from(["cosine", "step"]),
    "SOLVER.STEPS": st.sampled_from([(), (1,), (1, 2), (2, 1), (-1,)]),
    "SOLVER.EPOCHS": st.sampled_from([0, 1, 3]),
    "SOLVER.WARMUP_EPOCHS": st.sampled_from([0, 1, 3]),
    "DATA.LABEL_RATIO": st.sampled_from([-0.5, 0, 0.5, 1, 1.5]),
    "LOSS.NAME": st.sampled_from(["unicon", "infonce"]),
    "CO2.ENABLED": st.booleans(),
    "CO2.T": st.sampled_from([0, 0.05]),
}
TINY_DATA = [
    "DATA.NAME", "shapes", "DATA.SHAPES.NUM_TRAIN", "40", "DATA.SHAPES.IMAGE_SIZE", "24",
    "MODEL.ARCH", "resnet18", "SOLVER.MAX_STEPS", "1", "DATA.NUM_WORKERS", "0",
    "LOG.TENSORBOARD", "False", "LOG.PROGRESS", "off", "CHECKPOINT.PERIOD_STEPS", "0",
    # A valid start that the generated overrides move from.
    "SOLVER.BATCH_SIZE", "8", "MOCO.BN_SPLITS", "2", "MOCO.K", "16", "INPUT.SIZE", "8",
    "SOLVER.EPOCHS", "3",
]  # fmt: skip
# The start of every answer to a refused config: the command, then the key and its value.
REFUSAL = re.compile(r"^unimoco pretrain: [A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)* = ", re.MULTILINE)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.lists(st.sampled_from(sorted(AROUND)), min_size=1, max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({key: AROUND[key] for key in keys})
    )
)
def test_pretrain_trains_or_refuses_the_config(values, capsys, tmp_path_factory):
    """``unimoco pretrain`` on generated configs either trains one step (exit 0) or exits 2
    with a message naming a key; it never raises."""
    opts = [text for key, value in values.items() for text in (key, str(value))]
    out = tmp_path_factory.mktemp("run")
    code = cli_main(["pretrain", *TINY_DATA, *opts, "OUTPUT_DIR", str(out)])
    err = capsys.readouterr().err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert REFUSAL.search(err), err
    else:
        assert (out / "metrics.json").is_file()
