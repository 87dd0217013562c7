"""The front end shared by ``unimoco knn | lincls | semisup``: arguments, config, backbone,
metrics JSON and a line in the run's log; one process or torchrun. The output directory is
locked against a second run of the same command; lincls and semisup checkpoint every epoch,
stop cleanly on SIGTERM / SIGINT and continue with ``--resume``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from fvcore.common.config import CfgNode

from .. import distributed as du
from ..backbone import BackboneFormatError
from ..checkpoint import CheckpointError
from ..data.datasets import DatasetError
from ..data.label_subset import LabeledListError
from ..engine.command import Command, config_parser, load_pretrain_cfg
from ..engine.logging_utils import setup_logger, write_json
from ..engine.preemption import StopSignal
from .features import EvalError, resolve_backbone
from .resume import EpochCheckpoint

# (backbone, config, device[, epochs=EpochCheckpoint]) -> metrics with "top1" and "top5" (%)
Evaluate = Callable[..., dict]
# Bad input besides the config's (exit status 2).
STATUSES = {
    CheckpointError: 2,
    DatasetError: 2,
    LabeledListError: 2,
    BackboneFormatError: 2,
    EvalError: 2,
}


def build_parser(command: str, description: str, resumable: bool) -> argparse.ArgumentParser:
    parser = config_parser(
        f"unimoco {command}",
        f"{description}. Reads our checkpoints, official MoCo / UniMoCo ones, "
        f"unimoco semisup's and torchvision ResNet weights; writes "
        f"OUTPUT_DIR/{command}_metrics.json. Multi-GPU: "
        f"torchrun --nproc_per_node N -m unimoco.cli {command} ...",
        epilog="Exit status: 0 done; 2 bad input or OUTPUT_DIR in use by another run"
        + (
            "; 128 + N stopped by signal N (SIGTERM, SIGINT): --resume continues"
            if resumable
            else ""
        ),
        config_of="the pretraining config",
    )
    if resumable:
        parser.add_argument(
            "--resume",
            action="store_true",
            help=f"continue from OUTPUT_DIR/{command}_last.pth (written after every epoch)",
        )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="FILE", help="backbone checkpoint (.pth)")
    source.add_argument(
        "--random-init",
        action="store_true",
        help="a randomly initialised MODEL.ARCH (seeded by SEED): the baseline",
    )
    return parser


def run_command(
    command: str,
    description: str,
    argv: list[str] | None,
    evaluate: Evaluate,
    resumable: bool = False,
) -> int:
    """Parse ``argv``, lock the output directory, load the backbone, run ``evaluate`` (given an
    :class:`EpochCheckpoint` when ``resumable``); 2 on bad input, with its reason."""

    def run(args: argparse.Namespace, cfg: CfgNode) -> int:
        device = du.init_from_env()
        with StopSignal() as stop:
            extra = {}
            if resumable:
                path = Path(cfg.OUTPUT_DIR) / f"{command}_last.pth"
                extra["epochs"] = EpochCheckpoint(path, args.resume, stop, device)
            return _evaluate(command, args, cfg, device, evaluate, extra)

    return Command(
        command,
        build_parser(command, description, resumable),
        load_pretrain_cfg,
        run,
        lock_file=f"{command}.lock",
        statuses=STATUSES,
        torchrun=True,
    ).main(argv)


def _evaluate(
    command: str,
    args: argparse.Namespace,
    cfg: CfgNode,
    device: torch.device,
    evaluate: Evaluate,
    extra: dict,
) -> int:
    """The command in its locked output directory: metrics JSON and log line; the exit status."""
    logger = setup_logger(cfg.OUTPUT_DIR, du.is_main_process())
    output_dir = Path(cfg.OUTPUT_DIR)
    if du.is_main_process():
        (output_dir / f"{command}_config.yaml").write_text(cfg.dump())
    start = time.perf_counter()
    torch.manual_seed(cfg.SEED)  # the head's init; crops and shuffles have their own seeds
    state = resolve_backbone(args.checkpoint, cfg)
    source = args.checkpoint or "random init"
    logger.info("%s: %s from %s (%s)", command, state.arch, source, state.source_format)
    metrics = evaluate(state, cfg, device, **extra)
    result = {
        **metrics,
        "checkpoint": source,
        "source_format": state.source_format,
        "arch": state.arch,
        "dataset": cfg.DATA.NAME,
        "seed": cfg.SEED,
        "wall_time_s": time.perf_counter() - start,
    }
    if du.is_main_process():
        write_json(output_dir / f"{command}_metrics.json", result)
    logger.info(
        "%s: top-1 %.2f  top-5 %.2f  (%s, %s on %s)",
        command,
        result["top1"],
        result["top5"],
        source,
        state.arch,
        cfg.DATA.NAME,
    )
    return 0
