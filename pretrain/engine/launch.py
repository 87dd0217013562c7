"""``unimoco pretrain [--config-file F] [--resume] [KEY VALUE ...]``, one process or torchrun."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import distributed as du
from ..checkpoint import CheckpointError
from ..config import ConfigError, load_cfg
from ..data.datasets import DatasetError
from ..data.label_subset import LabeledListError
from .logging_utils import setup_logger
from .preemption import Preempted
from .run_lock import RunLockError, lock_on_main

LOCK_FILE = "pretrain.lock"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoco pretrain",
        description="UniMoCo / MoCo pretraining of a ResNet. Without --config-file the defaults "
        "are MoCo v2's (R50, 224 px, K 65536, cosine lr); set DATA.ROOT to an ImageFolder. "
        "Multi-GPU: torchrun --nproc_per_node N -m unimoco.cli pretrain ...",
        epilog="Exit status: 0 done; 1 stopped on SOLVER.MAX_NONFINITE non-finite losses in a row; "
        "2 bad input (config, data, checkpoint) or OUTPUT_DIR in use by another run; 128 + N "
        "stopped by signal N (SIGTERM, SIGINT) after writing a checkpoint: --resume continues.",
    )
    parser.add_argument("--config-file", default=None, metavar="FILE", help="YAML config")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR's last checkpoint (a fresh start if there is none)",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE pairs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_cfg(args.config_file, args.opts)
    except ConfigError as err:
        print(f"unimoco pretrain: {err}", file=sys.stderr)
        return 2
    device = du.init_from_env()
    try:
        lock = lock_on_main(cfg.OUTPUT_DIR, LOCK_FILE)
    except RunLockError as err:
        print(f"unimoco pretrain: {err}", file=sys.stderr)
        return 2
    try:
        return _run(args, cfg, device)
    finally:
        if lock is not None:
            lock.release()


def _run(args: argparse.Namespace, cfg, device) -> int:
    """Pretrain in the locked output directory; the exit status (see the parser's epilog)."""
    logger = setup_logger(cfg.OUTPUT_DIR, du.is_main_process())
    output_dir = Path(cfg.OUTPUT_DIR)
    if du.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(cfg.dump())
    logger.info("config: %s", args.config_file or "(built-in MoCo v2 defaults)")

    from .step_guard import NonFiniteLossError
    from .trainer import PretrainTrainer, TooManyBadImages

    try:
        trainer = PretrainTrainer(cfg, device)
        if args.resume:
            trainer.resume()
        trainer.train()
    except (ConfigError, DatasetError, LabeledListError, CheckpointError, TooManyBadImages) as err:
        logger.error("unimoco pretrain: %s", err)
        return 2
    except NonFiniteLossError as err:
        logger.error("unimoco pretrain: %s", err)
        return 1
    except Preempted as err:
        logger.warning("unimoco pretrain: %s", err)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
