"""Safe file I/O for weights: atomic writes, and unpickling that admits numpy arrays only.

Plain ``pickle.load`` runs whatever code a file names; detectron2's ``.pkl`` weights need no
more than dicts, strings, numbers and numpy arrays, so nothing else is let through.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

# The globals a pickle of numpy arrays needs (numpy 1.x and 2.x names; protocol 2 encodes bytes
# with _codecs.encode), nothing else.
_NUMPY_GLOBALS = {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in [
        ("multiarray", "_reconstruct"),
        ("multiarray", "scalar"),
        ("numeric", "_frombuffer"),
    ]
}
_NUMPY_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype")}
_NUMPY_GLOBALS |= {("collections", "OrderedDict"), ("_codecs", "encode")}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a Python object other than numpy arrays and plain containers."""


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name}: only numpy arrays and plain Python values are "
            "accepted in .pkl weights (other objects can run code when loaded)"
        )


def load_numpy_pickle(file: BinaryIO, name: str = "<pickle>") -> Any:
    """Unpickle ``file`` admitting only numpy arrays and plain values; errors name ``name``."""
    try:
        return _NumpyUnpickler(file, encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{name}: {err}") from None


def save_pickle_atomic(obj: Any, path: str | Path) -> None:
    """Pickle ``obj`` to a temporary file next to ``path`` and rename it into place."""
    write_atomic(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file next to ``path`` and rename it into place."""
    write_atomic(path, lambda f: torch.save(obj, f))


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file in ``path``'s folder, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
