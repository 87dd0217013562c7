"""detectron2's checkpointer, made to load weights without running code from the file.

detectron2 reads ``.pkl`` weights with plain ``pickle.load``; this one admits numpy arrays and
plain values only, and reads every other file with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from unimoco.transfer.files import load_numpy_pickle


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose loads never run code from the file."""

    def _load_file(self, filename: str) -> dict:
        if not filename.endswith(".pkl"):
            return super()._load_file(filename)
        with PathManager.open(filename, "rb") as f:
            data = load_numpy_pickle(f, filename)
        if isinstance(data, dict) and "model" in data and "__author__" in data:
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        # Detectron / Caffe2 model-zoo weights (e.g. MSRA R-50.pkl), read the way detectron2 does.
        data = data.get("blobs", data)
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f: str) -> Any:
        return torch.load(f, map_location="cpu", weights_only=True)
