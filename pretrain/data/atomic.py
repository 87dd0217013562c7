"""Generated folders that appear whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_folder_atomically(final: Path, fill: Callable[[Path], None]) -> Path:
    """Run ``fill`` on a temporary sibling of ``final`` and rename it into place.

    A crash leaves only a hidden temporary folder, never a partial ``final``; when another
    process finished the same folder first, its result is kept.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        fill(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # not a concurrent writer that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
