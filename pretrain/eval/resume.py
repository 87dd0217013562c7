"""Epoch checkpoints of the training evaluations (lincls, semisup): preemption and ``--resume``.

After every epoch the trained state (model, optimizer, next epoch) is written atomically to
``OUTPUT_DIR/<command>_last.pth``. A stop signal (SIGTERM / SIGINT) ends the run at the next step
boundary with :class:`Preempted`; ``--resume`` then repeats the interrupted epoch from that file.
Crops and shuffles are seeded per (seed, epoch, image), so the result equals an uninterrupted run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .. import distributed as du
from ..checkpoint import load_checkpoint, save_checkpoint
from ..engine.preemption import Preempted, StopSignal, stop_agreed
from ..log_names import LOGGER_NAME
from .features import EvalError

logger = logging.getLogger(LOGGER_NAME)


class EpochCheckpoint:
    """Saves ``modules`` (anything with ``state_dict``) at epoch ends; watches for stop signals.

    Without a path (direct calls of the training functions) it saves nothing and never stops.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        resume: bool = False,
        stop: StopSignal | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.path = Path(path) if path else None
        self.resume = resume
        self.stop = stop
        self.device = device or torch.device("cpu")

    def start(self, modules: dict[str, Any]) -> int:
        """The first epoch to run: 0, or the saved one with ``modules`` restored (``--resume``)."""
        if not (self.resume and self.path and self.path.is_file()):
            return 0
        state = load_checkpoint(self.path)
        missing = sorted(set(modules) - set(state.get("state", {})))
        if missing or "epoch" not in state:
            raise EvalError(f"{self.path} is not an epoch checkpoint of this command: {missing}")
        for name, module in modules.items():
            module.load_state_dict(state["state"][name])
        logger.info("resume: %s, from epoch %d", self.path, state["epoch"] + 1)
        return state["epoch"]

    def end_epoch(self, epoch: int, modules: dict[str, Any]) -> None:
        """Record that ``epoch`` (0-based) is complete, with the state after it."""
        if self.path is None:
            return
        if du.is_main_process():
            state = {name: module.state_dict() for name, module in modules.items()}
            save_checkpoint({"epoch": epoch + 1, "state": state}, self.path)
        du.barrier()

    def check_stop(self, epoch: int) -> None:
        """At a step boundary: raise :class:`Preempted` when a rank got a stop signal."""
        if self.stop is None or not stop_agreed(self.stop.requested, self.device):
            return
        where = f"{self.path} (after epoch {epoch})" if epoch else "no epoch checkpoint yet"
        raise Preempted(
            self.stop.number,
            f"stopped by {self.stop.name} in epoch {epoch + 1}; last completed epoch: {where}; "
            "run again with --resume to continue",
        )
