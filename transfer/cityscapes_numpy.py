"""cityscapesscripts' evaluation modules (2.3.0, the newest) on numpy 2: they call ``np.in1d``,
which numpy 2.4 removed, and write json files whose numbers are numpy scalars since numpy 2's
``count_nonzero`` returns one, which their json writer rejects. :func:`fit_numpy` gives one such
module what it needs; nothing outside that module changes."""

from __future__ import annotations

import importlib
import json
import types
from typing import Any

import numpy as np


def _in1d(values, test_values, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    """``np.in1d`` as numpy < 2.4 had it: ``isin`` on the flattened input."""
    return np.isin(np.ravel(values), test_values, assume_unique=assume_unique, invert=invert)


def _plain(value: Any) -> Any:
    """What cityscapesscripts' writer does for an object (its ``__dict__``), and numpy scalars
    and arrays as Python numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value.__dict__


def _write_dict_to_json(dict_name: dict, file_name: str) -> None:
    """cityscapesscripts' ``writeDict2JSON``, numpy scalars included."""
    with open(file_name, "w") as f:
        f.write(json.dumps(dict_name, default=_plain, sort_keys=True, indent=4))


def fit_numpy(module_name: str) -> types.ModuleType:
    """Import the cityscapesscripts module ``module_name`` and, where it needs them, give it a
    numpy with ``in1d`` and a json writer that takes numpy scalars; returns the module."""
    module = importlib.import_module(module_name)
    if not hasattr(module.np, "in1d"):
        numpy = types.ModuleType("numpy")
        numpy.__dict__.update(np.__dict__)
        numpy.in1d = _in1d
        module.np = numpy
    if hasattr(module, "writeDict2JSON"):
        module.writeDict2JSON = _write_dict_to_json
    return module
