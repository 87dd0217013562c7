"""``unimoco pretrain [--config-file F] [--resume] [KEY VALUE ...]``, one process or torchrun."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fvcore.common.config import CfgNode

from .. import distributed as du
from ..checkpoint import CheckpointError
from ..data.datasets import DatasetError
from ..data.label_subset import LabeledListError
from .command import Command, config_parser, load_pretrain_cfg
from .logging_utils import setup_logger
from .step_guard import NonFiniteLossError
from .trainer import PretrainTrainer, TooManyBadImages

LOCK_FILE = "pretrain.lock"
STATUSES = {
    DatasetError: 2,
    LabeledListError: 2,
    CheckpointError: 2,
    TooManyBadImages: 2,
    NonFiniteLossError: 1,
}


def build_parser() -> argparse.ArgumentParser:
    parser = config_parser(
        "unimoco pretrain",
        "UniMoCo / MoCo pretraining of a ResNet. Without --config-file the defaults "
        "are MoCo v2's (R50, 224 px, K 65536, cosine lr); set DATA.ROOT to an ImageFolder. "
        "Multi-GPU: torchrun --nproc_per_node N -m unimoco.cli pretrain ...",
        epilog="Exit status: 0 done; 1 stopped on SOLVER.MAX_NONFINITE non-finite losses in a row; "
        "2 bad input (config, data, checkpoint) or OUTPUT_DIR in use by another run; 128 + N "
        "stopped by signal N (SIGTERM, SIGINT) after writing a checkpoint: --resume continues.",
        config_of="the pretraining config",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR's last checkpoint (a fresh start if there is none)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Pretrain; the exit status (see the parser's epilog)."""
    command = Command(
        "pretrain",
        build_parser(),
        load_pretrain_cfg,
        _run,
        lock_file=LOCK_FILE,
        statuses=STATUSES,
        torchrun=True,
    )
    return command.main(argv)


def _run(args: argparse.Namespace, cfg: CfgNode) -> int:
    """Pretrain in the locked output directory."""
    logger = setup_logger(cfg.OUTPUT_DIR, du.is_main_process())
    output_dir = Path(cfg.OUTPUT_DIR)
    if du.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(cfg.dump())
    logger.info("config: %s", args.config_file or "(built-in MoCo v2 defaults)")
    trainer = PretrainTrainer(cfg, du.init_from_env())
    if args.resume:
        trainer.resume()
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
