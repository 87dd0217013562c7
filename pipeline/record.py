"""A job's record (``stage.json`` in its folder): the hash of its resolved config and inputs, its
outputs and times; a re-run skips a job whose record matches."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECORD_FILE = "stage.json"


@dataclass
class JobRecord:
    """What one finished job (one stage on one backbone) left behind; outputs are file names
    relative to the job's folder."""

    stage: str
    name: str
    hash: str
    outputs: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    wall_time_s: float = 0.0
    # The unimoco version that ran the job ("" in records written before it was kept).
    unimoco_version: str = ""


def job_hash(*parts: str) -> str:
    """A short stable hash of a job's resolved config text(s) and its inputs' hashes."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def read_record(folder: Path) -> JobRecord | None:
    """The record in ``folder``, or None when there is none (or it is unreadable)."""
    try:
        return JobRecord(**json.loads((folder / RECORD_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_record(folder: Path, record: JobRecord) -> None:
    """Write ``folder/stage.json`` atomically (temporary file + rename)."""
    tmp = folder / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    tmp.replace(folder / RECORD_FILE)


def finished_record(folder: Path, expected_hash: str) -> JobRecord | None:
    """The record when the job finished with ``expected_hash`` and its outputs still exist."""
    record = read_record(folder)
    if record is None or record.hash != expected_hash:
        return None
    if not all((folder / output).exists() for output in record.outputs.values()):
        return None
    return record
