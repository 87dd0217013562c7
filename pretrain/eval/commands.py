"""The front end shared by ``unimoco knn | lincls | semisup``: arguments, config, backbone,
metrics JSON and a line in the run's log; one process or torchrun."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from fvcore.common.config import CfgNode

from .. import distributed as du
from ..backbone import BackboneFormatError, BackboneState
from ..config import ConfigError, load_cfg
from ..data.datasets import DatasetError
from ..data.label_subset import LabeledListError
from ..engine.logging_utils import setup_logger, write_json
from .features import EvalError, resolve_backbone

# (backbone, config, device) -> metrics with at least "top1" and "top5" (percent)
Evaluate = Callable[[BackboneState, CfgNode, torch.device], dict]
INPUT_ERRORS = (
    ConfigError,
    DatasetError,
    LabeledListError,
    BackboneFormatError,
    EvalError,
)


def build_parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"unimoco {command}",
        description=f"{description}. Reads our checkpoints, official MoCo / UniMoCo ones and "
        f"torchvision ResNet weights; writes OUTPUT_DIR/{command}_metrics.json. Multi-GPU: "
        f"torchrun --nproc_per_node N -m unimoco.cli {command} ...",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="FILE", help="backbone checkpoint (.pth)")
    source.add_argument(
        "--random-init",
        action="store_true",
        help="a randomly initialised MODEL.ARCH (seeded by SEED): the baseline",
    )
    parser.add_argument(
        "--config-file", default=None, metavar="FILE", help="YAML config (the pretraining one)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE pairs"
    )
    return parser


def run_command(command: str, description: str, argv: list[str] | None, evaluate: Evaluate) -> int:
    """Parse ``argv``, load the backbone, run ``evaluate``; 2 on bad input, with its reason."""
    args = build_parser(command, description).parse_args(argv)
    try:
        cfg = load_cfg(args.config_file, args.opts)
    except ConfigError as err:
        print(f"unimoco {command}: {err}", file=sys.stderr)
        return 2
    device = du.init_from_env()
    logger = setup_logger(cfg.OUTPUT_DIR, du.is_main_process())
    output_dir = Path(cfg.OUTPUT_DIR)
    if du.is_main_process():
        (output_dir / f"{command}_config.yaml").write_text(cfg.dump())
    start = time.perf_counter()
    try:
        torch.manual_seed(cfg.SEED)  # the head's init; crops and shuffles have their own seeds
        state = resolve_backbone(args.checkpoint, cfg)
        source = args.checkpoint or "random init"
        logger.info("%s: %s from %s (%s)", command, state.arch, source, state.source_format)
        metrics = evaluate(state, cfg, device)
    except INPUT_ERRORS as err:
        logger.error("unimoco %s: %s", command, err)
        return 2
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
