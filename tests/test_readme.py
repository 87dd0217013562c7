"""The README's commands stay true.

Mechanism: a fenced ``bash`` block right after a ``<!-- test -->`` line is runnable. Each of its
command lines (``\\`` continuations joined, comments dropped) is executed in order, in this
process, from a temporary folder that links to ``configs/`` (so ``output/...`` lands there and
the shapes cache is the test's), with the tiny ``KEY VALUE`` settings of ``TINY`` for its
subcommand appended: later overrides win, so the command runs as written, only smaller. Every
other ``unimoco`` command in the README (real data, several GPUs) is checked without running:
its subcommand exists, its config file exists (a path in the checkout or a built-in config's name),
and its overrides load into that config.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from unimoco.cli import COMMANDS
from unimoco.cli import main as cli_main
from unimoco.configs import builtin_path
from unimoco.pipeline.config import load_pipeline_cfg
from unimoco.pretrain.config import load_cfg
from unimoco.transfer.config import load_detection_cfg

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- test -->"

_PRETRAIN_DATA = ["DATA.SHAPES.NUM_TRAIN", "64", "DATA.SHAPES.NUM_VAL", "20",
                  "DATA.SHAPES.IMAGE_SIZE", "32", "DATA.NUM_WORKERS", "0"]  # fmt: skip
_PRETRAIN = _PRETRAIN_DATA + ["MOCO.K", "16", "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "1",
                              "EVAL.KNN_PERIOD", "0", "LOG.TENSORBOARD", "False"]  # fmt: skip
_EVAL = _PRETRAIN_DATA + ["LINCLS.EPOCHS", "2"]
_DETECT = ["DATASETS.SHAPES.NUM_TRAIN", "4", "DATASETS.SHAPES.NUM_TEST", "2",
           "DATASETS.SHAPES.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TRAIN", "(64,)",
           "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
           "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)",
           "SOLVER.WARMUP_ITERS", "1", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8",
           "TEST.PRECISE_BN.NUM_ITER", "1", "DATALOADER.NUM_WORKERS", "0"]  # fmt: skip
TINY = {
    "pretrain": _PRETRAIN,
    "knn": _EVAL,
    "lincls": _EVAL,
    "convert": [],
    "detect": _DETECT,
    "pipeline": [
        *(f"PRETRAIN.{v}" if i % 2 == 0 else v for i, v in enumerate(_PRETRAIN)),
        *(f"EVAL.{v}" if i % 2 == 0 else v for i, v in enumerate(_EVAL)),
        *(f"DETECT.{v}" if i % 2 == 0 else v for i, v in enumerate(_DETECT)),
    ],
}
# Options that take a value, and flags, of the subcommands (the rest are KEY VALUE pairs).
_VALUED = {"--config-file", "--checkpoint", "--num-gpus", "--num-machines", "--machine-rank",
           "--dist-url", "--from", "--to"}  # fmt: skip
_FLAGS = {"--resume", "--eval-only", "--random-init"}


def readme_blocks(text: str) -> list[tuple[bool, list[str]]]:
    """Every fenced ``bash`` block as (marked runnable, its command lines)."""
    blocks = []
    for found in re.finditer(r"(?:^|\n)((?:<!-- test -->\n)?)```bash\n(.*?)\n```", text, re.S):
        joined = found.group(2).replace("\\\n", " ")
        lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
        blocks.append((bool(found.group(1)), [c for c in lines if c and not c.startswith("#")]))
    return blocks


def unimoco_argv(command: str) -> list[str] | None:
    """``[SUBCOMMAND, args...]`` of a ``unimoco ...`` or ``torchrun ... -m unimoco.cli ...``
    line; None for other commands (make, source)."""
    words = shlex.split(command)
    if words[0] == "unimoco":
        return words[1:]
    if "unimoco.cli" in words:
        return words[words.index("unimoco.cli") + 1 :]
    return None


def config_and_overrides(argv: list[str]) -> tuple[str | None, list[str]]:
    """The ``--config-file`` of a subcommand line, and its trailing ``KEY VALUE`` pairs."""
    config, rest, words = None, [], iter(argv[1:])
    for word in words:
        if word in _VALUED:
            value = next(words)
            config = value if word == "--config-file" else config
        elif word not in _FLAGS:
            rest.append(word)
    return config, rest


BLOCKS = readme_blocks((ROOT / "README.md").read_text())
RUNNABLE = [cmd for marked, cmds in BLOCKS if marked for cmd in cmds]
CHECKED = [cmd for marked, cmds in BLOCKS if not marked for cmd in cmds if unimoco_argv(cmd)]


def test_readme_marks_the_demo_and_the_stages():
    subcommands = [unimoco_argv(cmd)[0] for cmd in RUNNABLE]
    assert subcommands == ["pipeline", "pretrain", "knn", "lincls", "convert", "detect"]
    assert len(CHECKED) >= 15


def test_make_demo_runs_the_readme_pipeline_command():
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n\t(.*)$", makefile, re.M).group(1)
    assert demo.replace("$(PY) -m unimoco.cli", "unimoco") == RUNNABLE[0]


def test_runnable_readme_commands_run(tmp_path, monkeypatch):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for command in RUNNABLE:
            argv = unimoco_argv(command)
            assert cli_main([*argv, *TINY[argv[0]]]) == 0, command
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "output" / "pipeline_shapes_demo" / "report.html").is_file()
    assert (tmp_path / "output" / "shapes_voc" / "final_metrics.json").is_file()


@pytest.mark.parametrize("command", CHECKED)
def test_other_readme_commands_name_real_configs_and_keys(command):
    argv = unimoco_argv(command)
    assert argv[0] in COMMANDS, command
    config, overrides = config_and_overrides(argv)
    if config is None:
        return  # convert: positional files; the defaults of pretrain need no file
    if (ROOT / config).is_file():
        config = str(ROOT / config)
    else:
        assert builtin_path(config) is not None, f"neither a file nor a built-in config: {config}"
    if argv[0] == "detect":
        load_detection_cfg(config, overrides)
    elif argv[0] == "pipeline":
        load_pipeline_cfg(config, overrides)
    else:
        load_cfg(config, overrides)
