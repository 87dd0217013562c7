"""``unimoco pipeline --config-file F [--from STAGE] [KEY VALUE ...]``: pretrain, evaluate,
convert, fine-tune detection and report, in one output folder, skipping finished stages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fvcore.common.config import CfgNode

from .config import PipelineConfigError, load_pipeline_cfg
from .jobs import STAGES, Job, StageFailed
from .plan import backbone_names, build_jobs
from .record import read_record
from .report.build import classification_table, detection_table, write_report
from .report.document import markdown_table
from .report.results import collect_results
from .runner import run_jobs

LOG_FILE = "pipeline.log"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoco pipeline",
        description="Pretrain -> kNN + linear evaluation -> convert -> detectron2 fine-tune -> "
        "report (OUTPUT_DIR/report.md, report.html). Stages that finished with the same config "
        "are skipped on a re-run. Overrides: pipeline keys (OUTPUT_DIR out), or a stage's keys "
        "behind its section (PRETRAIN.SOLVER.EPOCHS 2, EVAL.LINCLS.EPOCHS 5, "
        "DETECT.SOLVER.MAX_ITER 100).",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="pipeline YAML")
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
    args = build_parser().parse_args(argv)
    try:
        cfg = load_pipeline_cfg(args.config_file, args.opts)
        jobs = build_jobs(cfg, lambda job: _report(job, cfg))
    except PipelineConfigError as err:
        print(f"unimoco pipeline: {err}", file=sys.stderr)
        return 2
    output_dir = Path(cfg.OUTPUT_DIR)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "pipeline.yaml").write_text(cfg.dump())
    say = _sayer(output_dir / LOG_FILE)
    say(f"pipeline {args.config_file}: {len(jobs)} jobs into {output_dir}")
    try:
        run_jobs(jobs, args.from_stage, say)
    except StageFailed as err:
        say(f"unimoco pipeline: {err}")
        return 1
    results = collect_results(output_dir, backbone_names(cfg), [])
    for table in (classification_table(results), detection_table(results)):
        if table is not None:
            say("\n" + markdown_table(table))
    say(f"\nreport: {output_dir / 'report.html'} (and report.md)")
    return 0


def _report(job: Job, cfg: CfgNode) -> dict[str, str]:
    """The report job: gather every job's results and timings, write the plots and pages."""
    records = [read_record(upstream.folder) for upstream in job.inputs]
    timings = [(r.stage, r.name, r.wall_time_s) for r in records if r is not None]
    results = collect_results(Path(cfg.OUTPUT_DIR), backbone_names(cfg), timings)
    markdown, page = write_report(results, cfg, job.folder)
    return {"markdown": f"../{markdown.name}", "html": f"../{page.name}"}


def _sayer(log_file: Path):
    def say(message: str) -> None:
        print(message, flush=True)
        with open(log_file, "a") as f:
            f.write(message + "\n")

    return say


if __name__ == "__main__":
    sys.exit(main())
