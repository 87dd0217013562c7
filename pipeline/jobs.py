"""The pipeline's jobs: one subcommand call (or a pair) on one backbone, with the resolved config
it runs on written into its folder first.

Backbones: ``pretrained`` (PRETRAIN's recipe) and the baselines ``random`` (random init),
``supervised`` (the same pretraining with every label) and ``moco`` (the same with none). Each
job's hash covers its resolved config and the hashes of the jobs it reads from, so a changed
recipe reruns everything after it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from .record import job_hash

STAGES = ("pretrain", "eval", "convert", "detect", "report")
STAGE_CONFIG = "stage_config.yaml"
CONSOLE = "console.txt"
CHECKPOINT = "checkpoint_final.pth"
BACKBONE_PKL = "backbone.pkl"
# Loggers the subcommands configure (detectron2 adds handlers on every setup): whatever a call
# adds is removed again, so that the next stage does not log into this one's files.
_SUBCOMMAND_LOGGERS = ("unimoco", "detectron2", "fvcore", "d2")


class StageFailed(RuntimeError):
    """A subcommand returned a non-zero exit status."""


@dataclass
class Job:
    """One unit of work: ``run(job)`` does it and returns its outputs (name -> file in folder)."""

    stage: str
    name: str
    folder: Path
    config_text: str
    run: Callable[[Job], dict[str, str]]
    inputs: list[Job] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return job_hash(self.stage, self.config_text, *(job.hash for job in self.inputs))

    @property
    def title(self) -> str:
        return f"{self.stage} [{self.name}]"


def call(job: Job, command: str, argv: list[str]) -> None:
    """Run ``unimoco COMMAND argv`` in this process, its stdout (the log lines) into the job's
    ``console.txt``; progress bars and errors stay on stderr. A non-zero status raises
    ``StageFailed``."""
    from unimoco.cli import main as cli_main

    with open(job.folder / CONSOLE, "a") as console, redirect_stdout(console):
        with _subcommand_logging():
            status = cli_main([command, *argv])
    if status:
        raise StageFailed(
            f"{job.title}: unimoco {command} exited with status {status}; see "
            f"{job.folder / CONSOLE}"
        )


@contextmanager
def _subcommand_logging() -> Iterator[None]:
    before = {name: list(logging.getLogger(name).handlers) for name in _SUBCOMMAND_LOGGERS}
    try:
        yield
    finally:
        for name, kept in before.items():
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if h not in kept]:
                logger.removeHandler(handler)
                handler.close()
        d2_logger = sys.modules.get("detectron2.utils.logger")
        if d2_logger is not None:
            d2_logger.setup_logger.cache_clear()  # lru-cached: it would not add them back


def run_pretrain(job: Job) -> dict[str, str]:
    """``unimoco pretrain`` on the resolved config."""
    call(job, "pretrain", ["--config-file", str(job.folder / STAGE_CONFIG)])
    return {"checkpoint": CHECKPOINT, "metrics": "metrics.json", "history": "metrics.jsonl"}


def run_eval(job: Job, knn: bool, lincls: bool) -> dict[str, str]:
    """``unimoco knn`` and/or ``lincls`` on the pretraining job's checkpoint, or random init."""
    source = (
        ["--checkpoint", str(job.inputs[0].folder / CHECKPOINT)]
        if job.inputs
        else ["--random-init"]
    )
    outputs = {}
    for command, enabled in (("knn", knn), ("lincls", lincls)):
        if enabled:
            call(job, command, [*source, "--config-file", str(job.folder / STAGE_CONFIG)])
            outputs[command] = f"{command}_metrics.json"
    return outputs


def run_convert(job: Job) -> dict[str, str]:
    """``unimoco convert`` of the pretraining job's checkpoint to detectron2 weights."""
    call(job, "convert", [str(job.inputs[0].folder / CHECKPOINT), str(job.folder / BACKBONE_PKL)])
    return {"weights": BACKBONE_PKL}


def run_detect(job: Job) -> dict[str, str]:
    """``unimoco detect`` (fine-tune, then evaluate) on the resolved config."""
    call(job, "detect", ["--config-file", str(job.folder / STAGE_CONFIG)])
    return {"metrics": "final_metrics.json"}
