"""The ``unimoco`` command's terminal: known third-party noise is silenced, the rest shows;
every ``--config-file`` says which forms it takes."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from unimoco.cli import main as cli_main
from unimoco.third_party import quiet_known_warnings


def test_detect_command_starts_without_third_party_warnings():
    """Importing detectron2 on this torch warns that torch.jit.script is deprecated; the command
    does not show it."""
    done = subprocess.run(
        [sys.executable, "-m", "unimoco.cli", "detect", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: unimoco detect" in done.stdout
    assert "torch.jit.script" not in done.stderr and "Warning" not in done.stderr


def test_only_the_named_messages_are_silenced(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings.__wrapped__()  # uncached: its filters land inside this block
        for message, category in (
            ("`torch.jit.script` is deprecated. Please switch", FutureWarning),
            ("torch.meshgrid: in an upcoming release, it will be required", UserWarning),
            ("something else is deprecated", FutureWarning),
        ):
            warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]

    caplog.set_level(logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found, using X")
    logging.getLogger("torch.utils.cpp_extension").warning("ninja is missing")
    logging.getLogger("torch.fx._symbolic_trace").warning("is_fx_tracing will return true for")
    assert [record.getMessage() for record in caplog.records] == ["ninja is missing"]


@pytest.mark.parametrize(
    "command", ["pretrain", "bench", "knn", "lincls", "semisup", "detect", "pipeline"]
)
def test_config_file_help_names_files_and_builtin_names(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main([command, "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "a YAML file or a built-in config's name ('unimoco configs' lists them)" in text
