"""``unimoco pipeline --config-file F [--from STAGE] [KEY VALUE ...]``: pretrain, evaluate,
convert, fine-tune every transfer task (detection, segmentation, ...) and report, in one output
folder, skipping finished stages."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fvcore.common.config import CfgNode

from unimoco.pretrain.engine.command import Command, config_file_help

from .config import PipelineConfigError, load_pipeline_cfg, transfer_tasks
from .jobs import STAGES, Job, StageFailed
from .plan import backbone_names, build_jobs
from .record import read_record
from .report.build import classification_table, transfer_table, write_report
from .report.document import markdown_table
from .report.results import collect_results
from .runner import run_jobs

LOG_FILE = "pipeline.log"
LOCK_FILE = "pipeline.lock"
PIPELINE_LOGGER = "unimoco.pipeline"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoco pipeline",
        description="Pretrain -> kNN + linear evaluation -> convert -> detectron2 transfer tasks "
        "(DETECT and each TRANSFER.<name>) -> report (OUTPUT_DIR/report.md, report.html). Stages "
        "that finished with the same config are skipped on a re-run. Overrides: pipeline keys "
        "(OUTPUT_DIR out), or a stage's keys behind its section (PRETRAIN.SOLVER.EPOCHS 2, "
        "EVAL.LINCLS.EPOCHS 5, DETECT.SOLVER.MAX_ITER 100, TRANSFER.voc_seg.SOLVER.MAX_ITER 100).",
    )
    parser.add_argument(
        "--config-file",
        required=True,
        metavar="FILE",
        help=config_file_help("the pipeline config"),
    )
    parser.add_argument(
        "--from",
        dest="from_stage",
        choices=STAGES,
        default=None,
        help="rerun this stage and every later one, even if they finished",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE pairs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline; 2 on a bad config (naming the key), 1 when a stage fails."""
    command = Command(
        "pipeline",
        build_parser(),
        _load,
        _run,
        lock_file=LOCK_FILE,
        statuses={PipelineConfigError: 2, StageFailed: 1},
        logger_name=PIPELINE_LOGGER,
    )
    return command.main(argv)


def _load(args: argparse.Namespace) -> CfgNode:
    """The pipeline config, with every stage's config checked (by planning the jobs) before
    anything is written."""
    cfg = load_pipeline_cfg(args.config_file, args.opts)
    build_jobs(cfg, lambda job: _report(job, cfg))
    return cfg


def _run(args: argparse.Namespace, cfg: CfgNode) -> int:
    jobs = build_jobs(cfg, lambda job: _report(job, cfg))
    output_dir = Path(cfg.OUTPUT_DIR)
    (output_dir / "pipeline.yaml").write_text(cfg.dump())
    say = pipeline_logger(output_dir / LOG_FILE).info
    say(f"pipeline {args.config_file}: {len(jobs)} jobs into {output_dir}")
    run_jobs(jobs, args.from_stage, say)
    results = collect_results(output_dir, backbone_names(cfg), [], list(transfer_tasks(cfg)))
    tables = [classification_table(results), *map(transfer_table, results.transfer.values())]
    for table in tables:
        if table is not None:
            say("\n" + markdown_table(table))
    say(f"\nreport: {output_dir / 'report.html'} (and report.md)")
    return 0


def _report(job: Job, cfg: CfgNode) -> dict[str, str]:
    """The report job: gather every job's results and timings, write the plots and pages."""
    records = [read_record(upstream.folder) for upstream in job.inputs]
    timings = [(r.stage, r.name, r.wall_time_s) for r in records if r is not None]
    tasks = list(transfer_tasks(cfg))
    results = collect_results(Path(cfg.OUTPUT_DIR), backbone_names(cfg), timings, tasks)
    markdown, page = write_report(results, cfg, job.folder)
    return {"markdown": f"../{markdown.name}", "html": f"../{page.name}"}


def pipeline_logger(log_file: Path) -> logging.Logger:
    """The pipeline's own log: plain lines to stdout and appended to ``log_file`` (the stages
    log to their folders through the ``unimoco`` logger)."""
    logger = logging.getLogger(PIPELINE_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(log_file)):
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


if __name__ == "__main__":
    sys.exit(main())
