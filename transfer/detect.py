"""``unimoco detect``: fine-tune and evaluate a detectron2 model for any transfer task (the task
table in transfer/tasks.py), or score frozen features with linear SVMs, on CPU or on GPUs with
detectron2's launcher (multi-GPU, multi-machine)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import unimoco.transfer.builtin_tasks  # noqa: F401  (every task's row and data sets)
from unimoco.configs import resolve_config_file
from unimoco.pretrain.engine.command import ArgumentError, Command, config_file_help
from unimoco.transfer.checkpoint import SafeDetectionCheckpointer
from unimoco.transfer.config import DetectionConfigError, load_detection_cfg, sync_bn_fallback
from unimoco.transfer.datasets import DatasetError, register_datasets
from unimoco.transfer.trainer import Trainer, write_final_metrics
from unimoco.transfer.voc07_svm import check_svm_datasets, check_svm_run, run_svm

logger = logging.getLogger("unimoco.detect")


def setup(args: Any) -> CfgNode:
    """The frozen config of this process (SyncBN replaced where it cannot sync), logged and saved
    to OUTPUT_DIR by detectron2's ``default_setup``; the data sets registered and checked."""
    cfg = load_detection_cfg(args.config_file, args.opts or [])
    changed = sync_bn_fallback(cfg, comm.get_world_size())
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise DetectionConfigError(
            f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r} but no GPU is available; pass MODEL.DEVICE cpu"
        )
    cfg.freeze()
    # detectron2's default_setup copies the config file by name: give it the file a built-in
    # config's name means.
    args.config_file = str(resolve_config_file(args.config_file))
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="unimoco")
    if changed:
        logger.warning(
            f"SyncBN cannot sync in {comm.get_world_size()} process(es) on {cfg.MODEL.DEVICE}: "
            + ", ".join(f"{key} = {value}" for key, value in changed.items())
        )
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the model starts from random initialisation")
    register_datasets(cfg)
    return cfg


def run(args: Any) -> dict:
    """Train (or, with --eval-only, evaluate; with SVM.ENABLED, train and score the linear SVMs
    on frozen features) in this process; returns the evaluation results."""
    cfg = setup(args)
    check_svm_datasets(cfg)
    if cfg.SVM.ENABLED:
        results = run_svm(cfg)
    elif args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results = trainer.last_results
    if comm.is_main_process():
        path = write_final_metrics(cfg, results)
        logger.info(f"Final metrics written to {path}")
    return results


def main(argv: list[str]) -> int:
    """Run ``unimoco detect --config-file F [--num-gpus N] ... [KEY VALUE ...]``; the exit status
    (see the parser's epilog)."""
    command = Command(
        "detect",
        build_parser(),
        _load,
        _launch,
        statuses={DetectionConfigError: 2, DatasetError: 2},
        logger_name=logger.name,
    )
    return command.main(argv)


def build_parser() -> argparse.ArgumentParser:
    """detectron2's launcher arguments, described for this command."""
    parser = default_argument_parser(
        epilog="Exit status: 0 done; 2 bad input (config, data); 128 + N stopped by signal N "
        "(SIGTERM, SIGINT)\nafter a checkpoint: --resume continues."
    )
    parser.prog = "unimoco detect"
    parser.description = (
        "Fine-tune and evaluate a detectron2 model for one transfer task (detection, instance\n"
        "or semantic segmentation, keypoints: VOC, COCO, LVIS, Cityscapes, shapes) from\n"
        "converted weights (MODEL.WEIGHTS) or from random init; with SVM.ENABLED True, score\n"
        "the frozen backbone's features with linear SVMs (VOC07 classification) instead."
    )
    # argparse has no public way to reach an added argument; detectron2 added this one.
    config_file = next(a for a in parser._actions if "--config-file" in a.option_strings)
    config_file.help = config_file_help("the detection config")
    return parser


def _load(args: Any) -> CfgNode:
    """The config, checked here before any process is started (each process loads its own)."""
    if not args.config_file:
        raise ArgumentError("--config-file is required")
    cfg = load_detection_cfg(args.config_file, args.opts or [])
    if cfg.SVM.ENABLED:
        check_svm_run(cfg, args)
    return cfg


def _launch(args: Any, cfg: CfgNode) -> int:
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0
