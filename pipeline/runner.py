"""Runs the jobs in order: a job whose record matches its hash is skipped, unless its stage is
at or after ``--from``; a job that runs starts from an empty folder holding its config."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from .jobs import STAGE_CONFIG, STAGES, Job
from .record import JobRecord, finished_record, write_record


def run_jobs(
    jobs: list[Job], from_stage: str | None, say: Callable[[str], None]
) -> dict[Path, JobRecord]:
    """Run (or skip) every job; returns each job's record by folder."""
    first_forced = STAGES.index(from_stage) if from_stage else len(STAGES)
    records: dict[Path, JobRecord] = {}
    for index, job in enumerate(jobs, start=1):
        forced = STAGES.index(job.stage) >= first_forced
        done = None if forced else finished_record(job.folder, job.hash)
        prefix = f"[{index}/{len(jobs)}] {job.title}"
        if done is not None:
            say(f"{prefix}: done before with the same config ({job.hash}), skipped")
            records[job.folder] = done
            continue
        say(f"{prefix}: running in {job.folder}")
        records[job.folder] = run_job(job)
        say(f"{prefix}: finished in {records[job.folder].wall_time_s:.0f} s")
    return records


def run_job(job: Job) -> JobRecord:
    """Empty the job's folder, write its resolved config, run it, record it."""
    if job.folder.exists():
        shutil.rmtree(job.folder)
    job.folder.mkdir(parents=True)
    (job.folder / STAGE_CONFIG).write_text(job.config_text)
    started = time.time()
    outputs = job.run(job)
    finished = time.time()
    record = JobRecord(
        job.stage, job.name, job.hash, outputs, started, finished, finished - started, __version__
    )
    write_record(job.folder, record)
    return record
