"""Run logging: a text log, metrics as JSON lines, TensorBoard scalars (main process only)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from ... import __version__
from ..log_names import LOGGER_NAME


def setup_logger(output_dir: str | Path | None, is_main: bool) -> logging.Logger:
    """The ``unimoco`` logger: stdout on the main process, plus ``log.txt`` in the output dir."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%m/%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if is_main and output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(output_dir) / "log.txt")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


class MetricsWriter:
    """Appends scalars to ``metrics.jsonl`` and TensorBoard; a no-op off the main process."""

    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        self._jsonl = open(Path(output_dir) / "metrics.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically (temp file + rename), stamped with the unimoco version
    that wrote it (``unimoco_version``), so that results can be traced to the code."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    stamped = {"unimoco_version": __version__, **data}
    tmp.write_text(json.dumps(stamped, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
