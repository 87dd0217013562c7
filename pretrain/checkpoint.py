"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded as data only.

``torch.load(..., weights_only=True)`` everywhere: a checkpoint from the internet can carry a
pickle that runs code, and weights-only unpickling refuses it.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .log_names import LOGGER_NAME

LAST_CHECKPOINT = "checkpoint_last.pth"
PREVIOUS_CHECKPOINT = "checkpoint_prev.pth"
FINAL_CHECKPOINT = "checkpoint_final.pth"

logger = logging.getLogger(LOGGER_NAME)


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated, corrupt or not plain data."""


def save_checkpoint(
    state: dict[str, Any], path: str | Path, keep_previous: str | Path | None = None
) -> Path:
    """Write ``state`` to ``path`` via a temporary file in the same folder, fsync, then rename:
    a crash leaves either the previous file or the new one, never a partial file. With
    ``keep_previous``, the file ``path`` held until now stays there (a hard link, else a copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.is_file():
            _keep_copy(path, Path(keep_previous))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _keep_copy(path: Path, keep: Path) -> None:
    """Make ``keep`` another name of ``path``'s current content, replacing ``keep`` atomically."""
    tmp = keep.with_name(f".{keep.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # no hard links on this filesystem
        shutil.copyfile(path, tmp)
    os.replace(tmp, keep)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename: the directory entry itself must reach the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint as data (``weights_only=True``); errors name the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    _check_crcs(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is not a plain-data checkpoint (it needs code to unpickle, refused for "
            f"safety): {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is truncated or corrupt: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a dict")
    return state


def _check_crcs(path: Path) -> None:
    """Every record of a zip-format checkpoint against its stored CRC-32: ``torch.load`` does not
    check them, so a flipped bit in tensor data would load as a silently different weight.
    Records written without a checksum (CRC 0: ``torch.serialization.set_crc32_options(False)``)
    and legacy non-zip files are not checked."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # not a zip (legacy format) or unreadable: torch.load reports it
    with archive:
        for record in archive.infolist():
            if record.CRC == 0:
                continue
            try:
                with archive.open(record) as stream:
                    while stream.read(1 << 24):
                        pass
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise CheckpointError(
                    f"{path} is truncated or corrupt: its record {record.filename} fails the "
                    f"CRC-32 check (changed on disk after it was written: {err})"
                ) from None


def load_resume_checkpoint(
    output_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable of ``checkpoint_last.pth`` and ``checkpoint_prev.pth`` (a corrupt
    last one is reported and skipped); None when there is neither; CheckpointError when none
    of them loads."""
    errors = []
    for name in (LAST_CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = Path(output_dir) / name
        if not path.is_file():
            continue
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as err:
            logger.warning("resume: %s; falling back to the previous checkpoint", err)
            errors.append(str(err))
    if errors:
        raise CheckpointError(f"no usable checkpoint in {output_dir}: {'; '.join(errors)}")
    return None
