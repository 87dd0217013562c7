"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded as data only.

``torch.load(..., weights_only=True)`` everywhere: a checkpoint from the internet can carry a
pickle that runs code, and weights-only unpickling refuses it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

LAST_CHECKPOINT = "checkpoint_last.pth"
FINAL_CHECKPOINT = "checkpoint_final.pth"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated, corrupt or not plain data."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temporary file in the same folder, fsync, then rename:
    a crash leaves either the previous file or the new one, never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint as data (``weights_only=True``); errors name the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
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


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint a ``--resume`` continues from, if the output directory has one."""
    path = Path(output_dir) / LAST_CHECKPOINT
    return path if path.is_file() else None
